"""Lazy certification in the pair loop (``optimize_pairs(lazy=True)``,
``NeuronSplitOptions.lazy_certify``): the sound bound pass runs only for the pairs whose
optimised bound reaches their target; the others get no bound (-inf) and keep the loop's own
as a guide. Certified bounds are the same as without it and stay below the exact minimum."""

from __future__ import annotations

import numpy as np
import torch

import verifier.bab.pair_loop as pair_loop
from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from verifier.bab.beta import BetaOptions
from verifier.bab.neuron_domains import split_domains
from verifier.bab.pair_loop import Pairs, optimize_pairs


def _kids(seed: int):
    graph, exact = tiny_net(seed, hidden=(5, 5))
    rows = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    region = region_for(exact, 4, rows[:, None, :], np.array([[100.0], [100.0]]))
    search = make_search(graph, region, attack=False, narrow_dead=False)
    root = search.root()
    kids = split_domains(root, search.layers, root.candidates[:, 0])
    return exact, rows, search, kids


def test_lazy_pass_certifies_only_pairs_that_reach_their_target(monkeypatch):
    exact, rows, search, kids = _kids(41)
    inter = search._intermediates(kids, True)[0]
    _, full_coef, _ = search._spec(len(kids))
    n = len(kids)
    d = torch.arange(n).repeat(2)
    r = torch.arange(2).repeat_interleave(n)
    # row 0's target is always reached, row 1's never
    targets = torch.where(r == 0, torch.full((2 * n,), -1e9, dtype=torch.float64),
                          torch.full((2 * n,), 1e9, dtype=torch.float64))
    certified = []
    real = pair_loop._certify

    def spy(inter, start, coef, splits, params, cuts=None):
        certified.append(coef.shape[0])
        return real(inter, start, coef, splits, params, cuts)

    monkeypatch.setattr(pair_loop, "_certify", spy)
    out = {}
    for lazy in (False, True):
        out[lazy] = optimize_pairs(
            inter, search.out_name, full_coef, kids.splits, Pairs(d, r),
            (kids.alphas, kids.betas), BetaOptions(iterations=10),
            lambda idx, best: torch.zeros(len(idx), dtype=torch.bool),
            work_dtype=torch.float32, targets=targets, lazy=lazy)
    assert certified == [2 * n, n]  # without lazy every pair, with it row 0's only
    full, lazy_ = out[False][0], out[True][0]
    assert torch.equal(lazy_[r == 1], torch.full((n,), -torch.inf, dtype=lazy_.dtype))
    assert torch.allclose(lazy_[r == 0], full[r == 0])
    # the guide is the loop's own bound: close to the certified one, for every pair
    assert torch.allclose(out[True][3].double(), full, atol=1e-4, rtol=1e-4)
    for i in range(n):  # certified bounds stay below the exact minimum of each sub-domain
        fixed = [kids.splits[lay.value][i].reshape(-1).numpy() for lay in search.layers]
        m = exact_min(exact, -np.ones(4), np.ones(4), rows[0], fixed)
        assert float(lazy_[i]) <= m + 1e-6


def test_lazy_search_keeps_the_parents_bound_and_queues_by_the_guide():
    """With every row hopeless, the children keep their parent's (sound) bounds while their
    margins follow the optimisation (no sound pass proved anything to lower them)."""
    exact, rows, search, kids = _kids(42)
    out = search.bound(kids, 10, reuse=True)
    assert len(out) == len(kids)
    assert torch.equal(out.bound, torch.maximum(kids.bound, out.bound))
    for i in range(len(out)):
        fixed = [out.splits[lay.value][i].reshape(-1).numpy() for lay in search.layers]
        for j, row in enumerate(rows):
            m = exact_min(exact, -np.ones(4), np.ones(4), row, fixed)
            assert float(out.bound[i, j]) + 100.0 <= m + 1e-6
    assert bool((out.margin >= out.bound.min(1).values - 1e-9).all())
    assert bool((out.margin > out.bound.min(1).values + 1e-6).any())


def test_strong_branching_margins_never_below_the_parents_queued_margin():
    """With lazy certification a domain's bound may lie below its queued margin; strong
    branching's child estimates stay floored by the parent's margin, as they were by the
    parent's bound when every bound was certified."""
    exact, rows, search, kids = _kids(43)
    dom = search.bound(kids, 10, reuse=True)
    dom.margin = dom.margin + 1.0  # queued well above what a sound pass would give
    parents = search._intermediates(dom, True)[0]
    grand = split_domains(dom, search.layers, dom.candidates[:, 0])
    est = search._cheap_margin(grand, dom, parents)
    idx = torch.arange(len(grand)) % len(dom)
    assert bool((est >= dom.margin[idx]).all())


def test_children_queue_no_lower_than_their_parent():
    """A child's loop can end below its parent's (its new split's beta starts at 0): its
    queued margin is floored by the one it came with (its parent's), so the worst open margin
    never goes back, while its sound bound is still floored by the parent's bound."""
    exact, rows, search, kids = _kids(43)
    parent_margin = torch.full_like(kids.margin, 0.5)  # above anything the children reach
    kids.margin = parent_margin.clone()
    out = search.bound(kids, 2, reuse=True)
    assert torch.equal(out.margin, parent_margin)
    kids.margin = torch.full_like(kids.margin, -1e9)  # below: the children's own estimates
    low = search.bound(kids, 2, reuse=True)
    assert bool((low.margin > -1e9).all())
    for i in range(len(out)):  # the floor changes no sound bound
        fixed = [out.splits[lay.value][i].reshape(-1).numpy() for lay in search.layers]
        m = exact_min(exact, -np.ones(4), np.ones(4), rows[0], fixed)
        assert float(out.bound[i, 0]) + 100.0 <= m + 1e-6
