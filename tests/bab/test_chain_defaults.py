"""The ReLU search's "auto" choices on fully connected Linear/Relu chains (``fc_relu_chain``):
children's intermediate bounds "downstream" and one Relu split per domain and step there,
"reuse" and multi-splits on other Relu nets; explicit settings win; the chain defaults' bounds
stay below the exact minima and their verdicts match the exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.graph import Graph, Node, TensorInfo
from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from tests.bounds.nets import mlp

ROWS = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])


def _doubled(graph: Graph) -> Graph:
    """The graph with its output added to itself: Relu-only, but no chain (a value read
    twice)."""
    last = graph.outputs[0]
    return Graph(graph.inputs, (TensorInfo("sum", last.shape),),
                 (*graph.nodes, Node("sum", "Add", (last.name, last.name), last.shape)))


def _search(graph, exact, **opts):
    region = region_for(exact, 4, ROWS[:, None, :], np.array([[100.0], [100.0]]))
    return make_search(graph, region, attack=False, narrow_dead=False, **opts)


def test_chains_take_downstream_bounds_and_single_splits():
    graph, exact = tiny_net(60, hidden=(5, 5))
    search = _search(graph, exact)
    assert search.fc_chain
    assert search._mode() == "downstream" and not search._relu_multi_split()
    forced = _search(graph, exact, intermediate="reuse", relu_multi_split=True)
    assert forced._mode() == "reuse" and forced._relu_multi_split()


def test_other_relu_nets_keep_reuse_and_multi_splits():
    graph, exact = tiny_net(61, hidden=(5, 5))
    search = _search(_doubled(graph), exact)
    assert not search.fc_chain
    assert search._mode() == "reuse" and search._relu_multi_split()
    forced = _search(_doubled(graph), exact, intermediate="downstream", relu_multi_split=False)
    assert forced._mode() == "downstream" and not forced._relu_multi_split()
    sig = _search(mlp([(np.eye(4), np.zeros(4)), (np.ones((3, 4)), np.zeros(3))],
                      activation="Sigmoid"), exact)
    assert not sig.fc_chain and sig._mode() == "downstream"


def test_a_chain_step_splits_each_domain_once():
    graph, exact = tiny_net(62, hidden=(6, 5))
    search = _search(graph, exact)
    root = search.root()
    kids, reuse = search._split(root, root.candidates[:, 0], 64)
    assert len(kids) == 2 * len(root)  # one neuron per domain, though the batch has room
    assert isinstance(reuse, torch.Tensor)  # downstream: the newest split's layer per kid
    multi, _ = _search(graph, exact, relu_multi_split=True)._split(
        root, root.candidates[:, 0], 64)
    assert len(multi) > len(kids)


@pytest.mark.parametrize("seed", [63, 64, 65])
def test_chain_default_bounds_stay_below_exact_minima(seed):
    graph, exact = tiny_net(seed, hidden=(5, 5))
    search = _search(graph, exact)
    root = search.root()
    kids, reuse = search._split(root, root.candidates[:, 0], 64)
    out = search.bound(kids, 10, reuse)
    for i in range(len(out)):
        fixed = [out.splits[lay.value][i].reshape(-1).numpy() for lay in search.layers]
        for j, row in enumerate(ROWS):
            m = exact_min(exact, -np.ones(4), np.ones(4), row, fixed)
            assert float(out.bound[i, j]) + 100.0 <= m + 1e-6


@pytest.mark.parametrize(("seed", "delta"), [(s, d) for s in (66, 67) for d in (-0.05, 0.05)])
def test_chain_default_verdicts_match_exact(seed, delta):
    graph, exact = tiny_net(seed, hidden=(6, 5))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(4), np.ones(4), c)
    region = region_for(exact, 4, c[None, None], [[m + delta]])
    search = make_search(graph, region, attack=delta > 0)
    assert search.fc_chain
    out = search.run()
    assert out.verdict == ("sat" if delta > 0 else "unsat"), out.stats
