"""The pair loop's passes on Linear/Relu chains (``verifier.bab.chain_guide``): the chain is
recognised only where it is one; its bound, gradients and branching coefficients are the
engine's (``beta.split_bound``, ``branching.layer_output_coefs``) for any alphas, betas and
splits, with one box for all pairs or a box each; a search's certified bounds stay the same
and below the exact minima."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

import verifier.bab.chain_guide as chain_guide
import verifier.bab.pair_loop as pair_loop
from bounds.engine.alpha_ops import init_alphas
from bounds.engine.results import Intermediates, PassCache
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval
from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from tests.bounds.nets import mlp
from verifier.bab.beta import init_betas, split_bound, split_extra, split_terms
from verifier.bab.branching import layer_output_coefs
from verifier.bab.chain_guide import chain_bound, chain_coefs, chain_state, linear_chain, usable
from verifier.bab.neuron_domains import split_domains

ROWS = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])


def _relu_output(graph: Graph) -> Graph:
    """The graph with a Relu on its output (as ERAN's nets have)."""
    last = graph.outputs[0]
    return Graph(graph.inputs, (TensorInfo("out", last.shape),),
                 (*graph.nodes, Node("out", "Relu", (last.name,), last.shape)))


def _search(seed: int, hidden=(6, 5, 4), tail: bool = False, **opts):
    graph, exact = tiny_net(seed, hidden=hidden)
    if tail:
        graph = _relu_output(graph)
    region = region_for(exact, 4, ROWS[:, None, :], np.array([[100.0], [100.0]]))
    return exact, make_search(graph, region, attack=False, narrow_dead=False, **opts)


def _grandkids(search):
    root = search.root()
    kids = split_domains(root, search.layers, root.candidates[:, 0])
    inter = search._intermediates(kids, True)[0]
    search._branch_scores((inter, PassCache()), kids, kids.alphas, kids.betas,
                          torch.arange(2), torch.ones(len(kids), dtype=torch.bool))
    return split_domains(kids, search.layers, kids.candidates[:, 0])


def test_chains_are_recognised_and_nothing_else():
    rng = np.random.default_rng(0)
    weights = [(rng.normal(size=(3, 4)), rng.normal(size=3)),
               (rng.normal(size=(2, 3)), rng.normal(size=2))]
    chain = linear_chain(mlp(weights))
    assert chain is not None and [lay.relu for lay in chain.layers] == [None, "act0"]
    assert linear_chain(mlp(weights, input_shape=(1, 2, 2))) is not None  # a Reshape first
    assert linear_chain(mlp(weights, activation="Sigmoid")) is None
    tail = linear_chain(_relu_output(mlp(weights)))
    assert tail is not None and tail.layers[-1].linear is None and tail.start == "out"
    graph = mlp(weights)  # the memo does not keep a graph alive
    assert linear_chain(graph) is linear_chain(graph)
    gone = weakref.ref(graph)
    del graph
    gc.collect()
    assert gone() is None and all(ref() is not None for ref, _ in chain_guide._CHAINS.values())
    graph = mlp(weights)  # a value read twice is no chain
    twice = Node("sum", "Add", ("act0", "act0"), (1, 3))
    assert linear_chain(Graph(graph.inputs, (TensorInfo("sum", (1, 3)),),
                              (*graph.nodes[:2], twice))) is None


@pytest.mark.parametrize("seed,shared,tail", [(50, True, False), (51, False, False),
                                              (52, True, True), (55, False, True)])
def test_chain_bound_and_gradients_are_the_engines(seed, shared, tail):
    _, search = _search(seed, tail=tail)
    kids = _grandkids(search)
    inter = search._intermediates(kids, True)[0]
    n = len(kids)
    d, r = torch.arange(n).repeat(2), torch.arange(2).repeat_interleave(n)
    mine = inter.select(d)
    gen = torch.Generator().manual_seed(seed)
    if not shared:  # a box of its own per pair, inside the region's (and its bounds)
        name = mine.graph.inputs[0].name
        box = mine.bounds[name]
        lo = box.lower + 0.3 * torch.rand(box.lower.shape, generator=gen, dtype=torch.float64)
        hi = box.upper - 0.3 * torch.rand(box.upper.shape, generator=gen, dtype=torch.float64)
        mine = Intermediates(mine.graph, Interval(lo, hi), {**mine.bounds, name: Interval(lo, hi)},
                             mine.deltas)
    _, coef, _ = search._spec(n)
    coef = coef[d, r].unsqueeze(1)
    splits = {k: v[d] for k, v in kids.splits.items()}
    terms = split_terms(splits, torch.float64)
    assert terms  # some pairs carry splits
    alphas = {k: torch.rand(v.shape, generator=gen, dtype=torch.float64).requires_grad_(True)
              for k, v in init_alphas(mine, 1).items()}
    betas = {k: (torch.rand(v.shape, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
             for k, v in init_betas(terms, 1, None).items()}
    chain = linear_chain(mine.graph)
    assert usable(chain, mine, search.out_name, alphas, terms)
    state = chain_state(chain, mine)
    assert state.shared == shared
    ours = chain_bound(chain, state, coef, alphas, betas, terms)
    theirs = split_bound(mine, search.out_name, coef, alphas, betas, terms, PassCache())
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    params = [*alphas.values(), *betas.values()]
    for g, h in zip(torch.autograd.grad(ours.sum(), params),
                    torch.autograd.grad(theirs.sum(), params), strict=True):
        assert torch.allclose(g, h, rtol=1e-10, atol=1e-12)
    coefs, input_coef = chain_coefs(chain, state, coef, alphas, betas, terms)
    extra = split_extra(betas, terms)[0]
    their_coefs, their_input = layer_output_coefs(mine, search.out_name, coef, search.layers,
                                                  alphas, extra)
    assert set(coefs) == set(their_coefs)
    for k, v in coefs.items():
        assert torch.allclose(v, their_coefs[k], rtol=1e-12, atol=1e-12)
    assert torch.allclose(input_coef, their_input, rtol=1e-12, atol=1e-12)
    keep = torch.arange(len(d)) % 3 != 0  # the loop drops proved pairs: planes follow
    sub = chain_bound(chain, state.select(keep), coef[keep],
                      {k: v[keep] for k, v in alphas.items()},
                      {k: v[keep] for k, v in betas.items()},
                      {k: (v, s[keep], None) for k, (v, s, _) in terms.items()})
    assert torch.allclose(sub, ours[keep], rtol=1e-12, atol=1e-12)


def test_search_bounds_with_the_chain_pass_stay_sound_and_the_same(monkeypatch):
    calls = []
    real = pair_loop.chain_bound

    def spy(*args):
        calls.append(args[2].shape[0])
        return real(*args)

    monkeypatch.setattr(pair_loop, "chain_bound", spy)
    out = {}
    for on in (True, False):
        calls.clear()
        # (two layers: the exact minima enumerate the free neurons' phases)
        exact, search = _search(53, (5, 5), chain_pass=on, lazy_certify=False)
        kids = _grandkids(search)
        out[on] = search.bound(kids, 10, reuse=True)
        assert bool(calls) == on
    assert torch.allclose(out[True].bound, out[False].bound, rtol=1e-5, atol=1e-5)
    for i in range(len(out[True])):
        fixed = [out[True].splits[lay.value][i].reshape(-1).numpy() for lay in search.layers]
        for j, row in enumerate(ROWS):
            m = exact_min(exact, -np.ones(4), np.ones(4), row, fixed)
            assert float(out[True].bound[i, j]) + 100.0 <= m + 1e-6


def test_strong_branching_estimates_are_the_same_by_the_chain():
    estimates = {}
    for on in (True, False):
        _, search = _search(54, chain_pass=on)
        kids = _grandkids(search)  # (their candidates scored)
        kids.candidates = torch.where(kids.candidates >= 0, kids.candidates, 0)
        search._branch_scores((search._intermediates(kids, True)[0], PassCache()), kids,
                              kids.alphas, kids.betas, torch.arange(2),
                              torch.ones(len(kids), dtype=torch.bool))
        estimates[on] = search._cheap_margin(
            split_domains(kids, search.layers, kids.candidates[:, 0]), kids)
    assert torch.allclose(estimates[True], estimates[False], rtol=1e-5, atol=1e-5)
