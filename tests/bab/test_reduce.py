"""Dead Relus dropped from the neuron-split search's net (verifier/bab/reduce.py): the narrower
net computes the same outputs on the region, only Linear -> Relu -> Linear layers narrow, and
the search's answers stay exact (patterns x LPs) with it, and with float32 optimisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval
from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from verifier.bab.reduce import dead_relu_reduction

LO, HI = -0.25, 0.25  # a small box: many Relus are stable, some dead


def _narrowed(seed: int, hidden=(8, 8)):
    graph, exact = tiny_net(seed, hidden=hidden)
    c = np.array([1.0, -1.0, 0.0])
    search = make_search(graph, region_for(exact, 4, c[None, None], [[100.0]], LO, HI),
                         attack=False)
    search.root()
    return graph, exact, search


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_narrowed_net_computes_the_same_on_the_region(seed):
    graph, _, search = _narrowed(seed)
    assert search.reduction is not None and search.counters.extra["dead_dropped"] > 0
    x = torch.empty(64, 1, 4, dtype=torch.float64).uniform_(LO, HI)
    full = run_graph(graph, x)[0]
    narrow = run_graph(search.graph, x)[0]
    assert torch.allclose(full, narrow, atol=1e-12, rtol=0)
    for lay in search.layers:  # the kept Relus are exactly those not dead at the root
        keep = search.reduction.keep.get(lay.value)
        assert keep is None or len(keep) == lay.numel


def test_widen_inverts_take():
    _, _, search = _narrowed(0)
    red = search.reduction
    value = next(iter(red.keep))
    t = torch.arange(2 * len(red.keep[value]), dtype=torch.float64).reshape(
        2, *red.graph.shape_of(value))
    wide = red.widen(value, t, 1, fill=-7.0)
    assert wide.shape == (2, *red.shapes[value])
    assert torch.equal(red.take(value, wide, 1), t)
    assert int((wide == -7.0).sum()) == 2 * (wide[0].numel() - len(red.keep[value]))


def test_only_linear_relu_linear_layers_narrow():
    """A Relu whose output also feeds an Add (a residual) keeps its width; the graph is left
    alone when nothing else could narrow."""
    w, b = np.eye(2, dtype=np.float32), np.zeros(2, np.float32)
    nodes = (Node("l0", "Linear", ("x", None, None), (1, 2), {}, {1: w, 2: b - 1}),
             Node("r0", "Relu", ("l0",), (1, 2)),
             Node("l1", "Linear", ("r0", None, None), (1, 2), {}, {1: w, 2: b}),
             Node("s", "Add", ("l1", "r0"), (1, 2)))
    graph = Graph((TensorInfo("x", (1, 2)),), (TensorInfo("s", (1, 2)),), nodes)
    dead = Interval(torch.full((1, 1, 2), -2.0), torch.full((1, 1, 2), -0.5))
    assert dead_relu_reduction(graph, {"l0": dead}) is None


# seed 0 takes ~16 s per case: in the slow suite (pytest -m slow); seed 1 stays in the default
@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow), 1])
@pytest.mark.parametrize("delta", [-0.02, 0.02])
def test_exact_answers_with_narrowing_and_float32_work(seed, delta):
    """Near the exact minimum on a box where many Relus are dead: every combination of
    ``narrow_dead`` and ``work_float32`` answers exactly (a float32-guided domain never
    reports verified where a violation exists)."""
    graph, exact = tiny_net(seed, hidden=(8, 8))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, np.full(4, LO), np.full(4, HI), c)
    region = region_for(exact, 4, c[None, None], [[m + delta]], LO, HI)
    truth = "sat" if delta > 0 else "unsat"
    for narrow, f32 in ((True, True), (False, True), (True, False)):
        out = make_search(graph, region, narrow_dead=narrow, work_float32=f32).run()
        assert out.verdict == truth, (narrow, f32, out.stats)
