"""Cuts inside the bound (``verifier.bab.cuts``): for any cuts over Relu phases and any
multipliers >= 0, the bound with the cut terms lies below f at every point whose phases meet
the cuts (exact LPs per activation pattern, and sampled points); the terms do tighten; the
search with ``cuts`` keeps exact answers on tiny nets and really bounds with them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bounds.engine.intermediate import compute_intermediate
from bounds.types import Interval
from tests.bab.exact import exact_min
from tests.bab.test_cuts_nogoods import (
    learning_search,
    offset_region,
    outputs,
    pre_activations,
)
from tests.bab.test_neuron_split import region_for, tiny_net
from verifier.bab.beta import split_bound
from verifier.bab.branching import sign_split_layers
from verifier.bab.cuts import cut_set


def random_cuts(rng, sizes, k, length=(2, 4)):
    """k cuts over the neurons (global index), as the store keeps them: idx, sgn [k, L]."""
    total, width = sum(sizes), length[1]
    idx = torch.zeros((k, width), dtype=torch.long)
    sgn = torch.zeros((k, width), dtype=torch.int8)
    for row in range(k):
        n = int(rng.integers(length[0], length[1] + 1))
        pick = rng.choice(total, size=n, replace=False)
        idx[row, :n] = torch.tensor(pick)
        sgn[row, :n] = torch.tensor(rng.choice([-1, 1], size=n), dtype=torch.int8)
    return idx, sgn


def meets_cuts(phases: np.ndarray, idx, sgn) -> np.ndarray:
    """[N] bool: indicator vectors ``phases`` [N, T] (0/1) satisfy every cut."""
    ok = np.ones(len(phases), dtype=bool)
    for i, s in zip(idx.numpy(), sgn.numpy(), strict=True):
        lit = s != 0
        lhs = (phases[:, i[lit]] * s[lit]).sum(1)
        ok &= lhs <= (s[lit] == 1).sum() - 1
    return ok


def bound_with_cuts(graph, lo, hi, c, idx, sgn, mu_scale, seed):
    """(bound with the cut terms at random multipliers, bound without, the cut set)."""
    n_in = len(lo)
    box = Interval(torch.tensor(lo).reshape(1, n_in), torch.tensor(hi).reshape(1, n_in))
    inter = compute_intermediate(graph, box, {}, "crown")
    layers = sign_split_layers(graph)
    parts = []
    for lay in layers:
        x = inter.bounds[lay.value]
        parts.append(torch.where(x.lower >= 0, 1, torch.where(x.upper <= 0, -1, 0))
                     .reshape(1, -1).to(torch.int8))
    cuts = cut_set(layers, idx, sgn, torch.cat(parts, 1), torch.float64, "cpu", cap=len(idx))
    coef = torch.tensor(c, dtype=torch.float64).reshape(1, 1, -1)
    out = graph.outputs[0].name
    plain = split_bound(inter, out, coef, {}, {}, {})
    if cuts is None:
        return plain, plain, None
    gen = torch.Generator().manual_seed(seed)
    mu = torch.rand((1, 1, len(cuts)), generator=gen, dtype=torch.float64) * mu_scale
    return split_bound(inter, out, coef, {}, {}, {}, cuts=(cuts, mu)), plain, cuts


def exact_min_meeting(exact, lo, hi, c, sizes, idx, sgn) -> float:
    """min of c . net(x) over the points with an indicator vector that meets the cuts: every
    full activation pattern that meets them, one LP each."""
    best = np.inf
    for pattern in itertools.product((1, -1), repeat=sum(sizes)):
        phases = (np.array(pattern) > 0).astype(int)[None]
        if not meets_cuts(phases, idx, sgn)[0]:
            continue
        fixed, start = [], 0
        for size in sizes:
            fixed.append(np.array(pattern[start:start + size]))
            start += size
        best = min(best, exact_min(exact, lo, hi, c, fixed))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_cut_bound_is_below_f_where_the_cuts_hold(seed):
    rng = np.random.default_rng(seed)
    n_in, hidden = 3, (4, 4)
    graph, exact = tiny_net(100 + seed, n_in=n_in, hidden=hidden)
    lo, hi = -np.ones(n_in), np.ones(n_in)
    c = np.array([1.0, -1.0, 0.0])
    idx, sgn = random_cuts(rng, hidden, k=6)
    for mu_scale in (0.5, 5.0, 50.0):
        with_cuts, _, cuts = bound_with_cuts(graph, lo, hi, c, idx, sgn, mu_scale, seed)
        if cuts is None:
            continue
        truth = exact_min_meeting(exact, lo, hi, c, hidden, idx, sgn)
        assert float(with_cuts) <= truth + 1e-9, (mu_scale, float(with_cuts), truth)
        x = rng.uniform(lo, hi, size=(20_000, n_in))
        phases = np.concatenate([z >= 0 for z in pre_activations(exact, x)], 1).astype(int)
        meet = meets_cuts(phases, idx, sgn)
        f = outputs(exact, x) @ c
        if meet.any():
            assert f[meet].min() >= float(with_cuts) - 1e-9


def test_cut_terms_tighten_the_bound():
    """A cut that excludes the plain bound's minimiser's phases lifts the bound (some
    multiplier does): the terms reach the pass."""
    lifted = 0
    for seed in range(6):
        graph, exact = tiny_net(200 + seed, n_in=3, hidden=(4, 4))
        lo, hi, c = -np.ones(3), np.ones(3), np.array([1.0, -1.0, 0.0])
        x = np.random.default_rng(seed).uniform(lo, hi, size=(20_000, 3))
        worst = x[np.argmin(outputs(exact, x) @ c)][None]
        phases = np.concatenate([z >= 0 for z in pre_activations(exact, worst)], 1)[0]
        # a cut that the worst point's phases violate: two of its unstable-looking literals
        lits = np.nonzero(np.ones_like(phases))[0][:8]
        best = -np.inf
        for pair in itertools.combinations(lits, 2):
            idx = torch.tensor([list(pair)])
            sgn = torch.tensor([[1 if phases[j] else -1 for j in pair]], dtype=torch.int8)
            for scale in (0.1, 1.0, 10.0):
                with_cuts, plain, cuts = bound_with_cuts(graph, lo, hi, c, idx, sgn, scale, 0)
                if cuts is not None:
                    best = max(best, float(with_cuts - plain))
        lifted += best > 1e-6
    assert lifted >= 2


@pytest.mark.parametrize("seed", [70, 71])
@pytest.mark.parametrize("delta", [-0.03, 0.03])
def test_search_with_cuts_matches_exact(seed, delta):
    graph, region = offset_region(seed, delta)
    search = learning_search(graph, region, cuts=True, attack=delta > 0)
    out = search.run()
    assert out.verdict == ("sat" if delta > 0 else "unsat"), out.stats


def test_search_bounds_with_cuts():
    """On a tiny net whose search learns many nogoods (one step of 2 domains at a time), the
    main search's domains are bounded with the nogoods as cuts, and the answer stays exact.
    (Cut trees are off: they get a share of the time and, on a fast enough core, close this
    tiny region themselves before the main search starts, which made the test depend on the
    machine's speed.)"""
    graph, exact = tiny_net(43, n_in=4, hidden=(6, 6))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(4), np.ones(4), c)
    search = learning_search(graph, region_for(exact, 4, c[None, None], [[m - 0.01]]),
                             attack=False, branching="babsr", batch=2, cuts=True)
    search._grows_cut_trees = lambda: False
    out = search.run()
    assert out.verdict == "unsat", out.stats
    assert out.stats.get("stopped") != "a cut tree closed"
    assert out.stats["nogood_cut_domains"] > 0


def test_cut_set_keeps_only_cuts_that_can_tighten():
    layers = [lay for lay in sign_split_layers(tiny_net(1, n_in=2, hidden=(2, 2))[0])]
    # domain codes: neuron 0 active, 1 inactive, 2 and 3 free
    codes = torch.tensor([[1, -1, 0, 0]], dtype=torch.int8)
    idx = torch.tensor([[0, 2], [1, 3], [0, 1], [2, 3]])
    sgn = torch.tensor([[1, 1], [1, 1], [1, -1], [1, -1]], dtype=torch.int8)
    cuts = cut_set(layers, idx, sgn, codes, torch.float64, "cpu")
    # cut 1 is contradicted (neuron 1 is inactive), cut 2 is held whole (pruning's case)
    assert len(cuts) == 2 and bool(cuts.mask.all())
    assert sorted(cuts.length.tolist()) == [2.0, 2.0]
    assert [s.abs().sum().item() for s in cuts.signs] == [1.0, 3.0]


def test_a_cut_tree_that_closes_proves_the_region():
    """A cut tree is a complete search of the root's region: on tiny unsat nets some close,
    and the answer is then unsat (exact), with the main search not run."""
    closed = 0
    for seed in (70, 71, 72, 73):
        graph, region = offset_region(seed, -0.03)
        out = learning_search(graph, region, cuts=True, attack=False).run()
        assert out.verdict == "unsat", out.stats
        closed += out.stats.get("stopped") == "a cut tree closed"
    assert closed > 0
