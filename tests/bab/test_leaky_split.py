"""LeakyRelu neurons are split by sign in the ReLU search (beta-CROWN), like Relu: they are
exact once the sign of their input is fixed. Answers on tiny LeakyRelu MLPs match exact
ones (patterns x LPs); the search learns no cuts there (the cut terms are written on relu(z),
which a LeakyRelu does not output), even when asked to."""

from __future__ import annotations

import numpy as np
import pytest

from bounds.engine.analysis import outputs_relu, zero_when_dead
from tests.bab.exact import exact_min, exact_sat
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from tests.bounds.nets import with_activation
from verifier.bab.branching import sign_split_layers
from verifier.bab.cuts import relu_outputs


def leaky_net(seed: int, slope: float, n_in: int = 4, hidden=(5, 5)):
    """tiny_net with its Relus made LeakyRelu(``slope``)."""
    graph, exact = tiny_net(seed, n_in=n_in, hidden=hidden)
    return with_activation(graph, "LeakyRelu", {"alpha": slope}), exact


def test_leaky_layers_are_split_by_sign_without_cuts():
    graph, _ = leaky_net(0, 0.1)
    layers = sign_split_layers(graph)
    assert [lay.op for lay in layers] == ["LeakyRelu", "LeakyRelu"]
    node = graph.node(layers[0].node)
    assert not outputs_relu(node) and not zero_when_dead(node)
    assert not relu_outputs(graph, layers)
    relu_graph, _ = tiny_net(0)
    assert relu_outputs(relu_graph, sign_split_layers(relu_graph))


@pytest.mark.parametrize("slope", [0.01, 0.2])
@pytest.mark.parametrize("delta", [-0.05, 0.05])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_row_matches_exact(seed, delta, slope):
    graph, exact = leaky_net(seed, slope, hidden=(4, 5))
    lo, hi, c = -np.ones(4), np.ones(4), np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, lo, hi, c, slope=slope)
    rhs = np.array([[m + delta]])
    region = region_for(exact, 4, c[None, None], rhs)
    out = make_search(graph, region, branching="fsb" if seed % 2 else "babsr").run()
    truth = exact_sat(exact, lo, hi, c[None, None], rhs, slope=slope)
    assert truth == (delta > 0)  # (the oracle's two answers agree)
    assert out.verdict == ("sat" if truth else "unsat"), out.stats


@pytest.mark.parametrize(("seed", "intermediate", "cuts"),
                         [(30, "downstream", False), (31, "recompute", False),
                          (32, "reuse", True)])
def test_deeper_net_matches_exact(seed, intermediate, cuts):
    """Three hidden layers; with ``cuts`` asked for, nogoods are learned and no cut enters
    the bounds."""
    graph, exact = leaky_net(seed, 0.1, n_in=3, hidden=(4, 4, 4))
    lo, hi = -np.ones(3), np.ones(3)
    c = np.array([0.0, 1.0, -1.0])
    m = exact_min(exact, lo, hi, c, slope=0.1)
    for delta in (-0.03, 0.03):
        region = region_for(exact, 3, c[None, None], [[m + delta]])
        search = make_search(graph, region, intermediate=intermediate, cuts=cuts,
                             nogoods=cuts, root_alpha_iterations=5)
        assert not search.cuts
        out = search.run()
        assert out.verdict == ("sat" if delta > 0 else "unsat"), out.stats
