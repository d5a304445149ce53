"""Piecewise-linear ops other than Relu in the search: Abs is split by sign (beta-CROWN), like
Relu and LeakyRelu; Clip (and HardSigmoid, imported as a Clip) is split by GenBaB at the kink
inside a neuron's interval, and neurons with no kink inside are not candidates (their planes
are exact). Answers match exact ones: patterns x LPs for Abs, the exact MILP for Clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.graph import Node
from bounds.lookup.tables import branch_points
from bounds.registry import rules
from tests.bab.exact import exact_min, exact_sat
from tests.bab.test_genbab import alpha_lower, search
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from tests.bounds.nets import with_activation
from tests.milp.test_milp_activations import _min_output, _net
from verifier.bab.branching import sign_split_layers
from verifier.bab.nonlinear import SplitPoints, split_layers, splittable

F64 = torch.float64
KINK = float(np.float32(-0.2))  # as the imported model holds it
CLIP = {"min": KINK, "max": 1.0}


def abs_net(seed: int, n_in: int = 4, hidden=(5, 5)):
    """tiny_net with its Relus made Abs."""
    graph, exact = tiny_net(seed, n_in=n_in, hidden=hidden)
    return with_activation(graph, "Abs"), exact


# ---- Clip: split points at the kinks, candidates only where a kink is inside -----------------
def test_clip_points_are_the_kink_nearest_the_middle():
    lo = torch.tensor([-1.0, -1.0, 0.0, -3.0, 0.2, 1.5], dtype=F64)
    up = torch.tensor([0.5, 2.0, 3.0, 0.9, 0.8, 2.0], dtype=F64)
    p = branch_points("Clip", lo, up, attrs=CLIP)
    # one kink inside: it; both: the one nearer the midpoint; none: the midpoint
    assert p.tolist() == [KINK, 1.0, 1.0, KINK, 0.5, 1.75]
    layer = split_layers(_net("clip-0.2,1", 0).graph)[0]
    assert layer.op == "Clip" and not layer.sign_split
    assert torch.equal(SplitPoints("optimized")(layer, lo, up), p)


def test_clip_neurons_without_a_kink_inside_are_not_candidates():
    layer = split_layers(_net("clip-0.2,1", 0).graph)[0]
    lo = torch.tensor([[-1.0, 0.0, -3.0, 1.0, KINK, 0.3]], dtype=F64)
    up = torch.tensor([[0.5, 0.9, KINK, 4.0, 1.0, 0.3 + 1e-9]], dtype=F64)
    assert splittable(layer, lo, up).tolist() == [[True, False, False, False, False, False]]


def test_clip_halves_split_at_a_kink_are_exact():
    """Split at its one inner kink, each half of a Clip interval is linear: the planes of
    both halves coincide with the op (to rounding)."""
    lo = torch.tensor([-1.0, 0.5, -0.9], dtype=F64)
    up = torch.tensor([0.3, 2.0, 0.1], dtype=F64)
    p = branch_points("Clip", lo, up, attrs=CLIP)
    node = Node("c", "Clip", ("z",), (3,), CLIP)
    rule = rules().get("Clip")
    for a, b in ((lo, p), (p, up)):
        rel = rule.relax(node, a, b)
        z = a + torch.linspace(0, 1, 65, dtype=F64).unsqueeze(1) * (b - a)
        f = rule.forward(node, [z])
        torch.testing.assert_close(rel.lower_slope * z + rel.lower_offset, f, atol=1e-9, rtol=0)
        torch.testing.assert_close(rel.upper_slope * z + rel.upper_offset, f, atol=1e-9, rtol=0)


# ---- Clip end to end, against the exact MILP -------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_search_proves_beyond_incomplete_bounds_and_finds_violations(seed):
    """rhs between alpha-CROWN's bound and the exact minimum (MILP): only splits prove it (no
    Clip neuron was split before, so the search had nothing to branch on); just above the
    minimum it is never unsat (the search's own attack may miss the violation: Clip is flat
    outside its kinks, so gradients vanish; the pipeline's input splitting finds it)."""
    model = _net("clip-0.2,1", seed)
    graph = model.graph
    c = np.array([1.0, -1.0])
    lower, upper = -np.ones(3), np.ones(3)
    m, _, _ = _min_output(model, lower, upper, c)
    lb = alpha_lower(graph, c)
    assert lb <= m + 1e-7
    assert m - lb >= 1e-2, "construction: a gap the incomplete bounds leave for the search"
    region = region_for(None, 3, c[None, None], [[lb + 0.5 * (m - lb)]])
    out = search(graph, region, deadline_s=30.0).run()
    assert out.verdict == "unsat", out.stats
    region = region_for(None, 3, c[None, None], [[m + 0.02]])
    out = search(graph, region, deadline_s=5.0).run()
    assert out.verdict != "unsat", out.stats


# ---- Abs: sign splits, against patterns x LPs ------------------------------------------------
def test_abs_layers_are_split_by_sign():
    graph, _ = abs_net(0)
    assert [lay.op for lay in sign_split_layers(graph)] == ["Abs", "Abs"]


@pytest.mark.parametrize("delta", [-0.05, 0.05])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abs_single_row_matches_exact(seed, delta):
    graph, exact = abs_net(seed, hidden=(4, 5))
    lo, hi, c = -np.ones(4), np.ones(4), np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, lo, hi, c, slope=-1.0)
    rhs = np.array([[m + delta]])
    truth = exact_sat(exact, lo, hi, c[None, None], rhs, slope=-1.0)
    assert truth == (delta > 0)  # (the oracle's two answers agree)
    region = region_for(exact, 4, c[None, None], rhs)
    out = make_search(graph, region, branching="fsb" if seed % 2 else "babsr").run()
    assert out.verdict == ("sat" if truth else "unsat"), out.stats


@pytest.mark.parametrize("intermediate", ["downstream", "recompute", "reuse"])
def test_abs_deeper_net_matches_exact(intermediate):
    graph, exact = abs_net(30, n_in=3, hidden=(4, 4, 4))
    lo, hi, c = -np.ones(3), np.ones(3), np.array([0.0, 1.0, -1.0])
    m = exact_min(exact, lo, hi, c, slope=-1.0)
    for delta in (-0.03, 0.03):
        region = region_for(exact, 3, c[None, None], [[m + delta]])
        out = make_search(graph, region, intermediate=intermediate,
                          root_alpha_iterations=5).run()
        assert out.verdict == ("sat" if delta > 0 else "unsat"), out.stats
