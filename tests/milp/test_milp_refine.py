"""Bound refinement by LP/MILP (verifier/milp/refine.py) and the size rule for ``auto``."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from tests.milp.nets import make_spec, onnx_mlp, random_layers
from verifier.milp.backends import HighsBounder, solve
from verifier.milp.model import Expr, MilpModel
from verifier.milp.refine import (
    RefineOptions,
    count_unstable,
    crown_bounds,
    kink_inputs,
    milp_suits,
    refine_bounds,
)


def _net(seed: int):
    layers = random_layers([4, 12, 12, 12, 2], np.random.default_rng(seed))
    for w, _ in layers:
        w *= 1.5  # more unstable neurons
    return onnx_mlp([(w.astype(np.float32).astype(np.float64), b) for w, b in layers])


def _box(seed: int):
    rng = np.random.default_rng(50 + seed)
    centre = rng.uniform(-1, 1, 4)
    return centre - 0.6, centre + 0.6


def _samples(model, lower, upper, n=3000):
    xs = np.random.default_rng(0).uniform(lower, upper, (n, lower.size))
    with torch.no_grad():
        return run_graph(model.graph, torch.as_tensor(xs), keep_all=True)


@pytest.mark.parametrize("mode", ["lp", "milp"])
@pytest.mark.parametrize("seed", range(3))
def test_refined_bounds_are_sound_and_never_looser(mode, seed):
    model = _net(seed)
    lower, upper = _box(seed)
    res = crown_bounds(model.graph, lower, upper)
    out = refine_bounds(model.graph, lower, upper, res.intermediate, res.deltas,
                        time.monotonic() + 60,
                        RefineOptions(mode=mode, max_layers=3 if mode == "lp" else 1))
    names = kink_inputs(model.graph, skip_affine=True)
    assert set(out) <= set(names) and out
    values = _samples(model, lower, upper)
    gain = 0.0
    for name, iv in out.items():
        old = res.intermediate[name]
        assert torch.all(iv.lower >= old.lower) and torch.all(iv.upper <= old.upper)
        v = values[name].reshape(len(values[name]), -1)
        assert torch.all(v >= iv.lower.reshape(1, -1) - 1e-9)
        assert torch.all(v <= iv.upper.reshape(1, -1) + 1e-9)
        gain += float(((old.upper - old.lower) - (iv.upper - iv.lower)).sum())
    assert gain > 0


def test_first_layer_is_not_refined():
    """Values affine in the input have exact interval bounds: nothing to refine there."""
    model = _net(0)
    names = kink_inputs(model.graph)
    assert names[0] not in kink_inputs(model.graph, skip_affine=True)
    assert kink_inputs(model.graph, skip_affine=True) == names[1:]


def test_milp_refinement_is_at_least_as_tight_as_lp():
    model = _net(1)
    lower, upper = _box(1)
    res = crown_bounds(model.graph, lower, upper)
    args = (model.graph, lower, upper, res.intermediate, res.deltas)
    lp = refine_bounds(*args, time.monotonic() + 60, RefineOptions(mode="lp", max_layers=1))
    mi = refine_bounds(*args, time.monotonic() + 60, RefineOptions(mode="milp", max_layers=1))
    for name in lp:
        assert torch.all(mi[name].lower >= lp[name].lower - 1e-6)
        assert torch.all(mi[name].upper <= lp[name].upper + 1e-6)


def test_deadline_in_the_past_refines_nothing():
    model = _net(2)
    lower, upper = _box(2)
    res = crown_bounds(model.graph, lower, upper)
    out = refine_bounds(model.graph, lower, upper, res.intermediate, res.deltas,
                        time.monotonic() - 1)
    assert out == {}


def test_weak_duality_bound_matches_the_lp_optimum():
    """min x0 + x1 subject to x0 + 2 x1 >= 1, x in [0, 1]^2: optimum 0.5."""
    m = MilpModel()
    x = m.add_vars([0, 0], [1, 1])
    m.add_rows(Expr(x, np.array([[1.0, 2.0]]), np.zeros(1)), 1.0, np.inf)
    bounder = HighsBounder(m)
    value = bounder.minimum(x, np.array([1.0, 1.0]), 10)
    assert value <= 0.5 and value == pytest.approx(0.5, abs=1e-7)
    # a second objective on the same model (warm start): max x0 - x1 -> min -x0 + x1 = -1
    assert bounder.minimum(x, np.array([-1.0, 1.0]), 10) == pytest.approx(-1.0, abs=1e-7)
    m.objective = {0: 1.0, 1: 1.0}
    assert solve(m, 10, "highs").objective == pytest.approx(0.5)


def test_milp_suits_counts_unstable_neurons():
    model = _net(0)
    lower, upper = _box(0)
    spec = make_spec([(lower, upper)], [[[1.0, -1.0]]], [[0.0]])
    n = count_unstable(model.graph, crown_bounds(model.graph, lower, upper).intermediate)
    assert n > 0
    assert milp_suits(model.graph, spec, max_binaries=n)
    assert not milp_suits(model.graph, spec, max_binaries=n - 1)


def test_milp_suits_refuses_unsupported_ops():
    from bounds.graph import Graph, Node, TensorInfo

    graph = Graph((TensorInfo("x", (1, 2)),), (TensorInfo("s", (1, 2)),),
                  (Node("s", "Mul", ("x", "x"), (1, 2)),))
    spec = make_spec([(-np.ones(2), np.ones(2))], [[[1.0, 0.0]]], [[0.0]])
    assert not milp_suits(graph, spec)


def test_milp_suits_leaves_relaxed_only_nets_to_genbab():
    """Sigmoid only: the MILP would be an LP over planes the cascade already optimised; one
    Relu next to it makes the encoding worth a MILP again."""
    from bounds.graph import Graph, Node, TensorInfo

    smooth = Graph((TensorInfo("x", (1, 2)),), (TensorInfo("s", (1, 2)),),
                   (Node("s", "Sigmoid", ("x",), (1, 2)),))
    spec = make_spec([(-np.ones(2), np.ones(2))], [[[1.0, 0.0]]], [[0.0]])
    assert not milp_suits(smooth, spec)
    mixed = Graph((TensorInfo("x", (1, 2)),), (TensorInfo("r", (1, 2)),),
                  (Node("s", "Sigmoid", ("x",), (1, 2)), Node("r", "Relu", ("s",), (1, 2))))
    assert milp_suits(mixed, spec)


def test_auto_milp_decides_small_nets_and_declines_large_ones(monkeypatch):
    import verifier.milp.refine as refine

    model = _net(0)
    lower, upper = _box(0)
    spec = make_spec([(lower, upper)], [[[1.0, -1.0]]], [[1e3]])  # trivially sat
    verdict, cex, _ = refine.auto_milp(model, spec, time.monotonic() + 30)
    assert verdict == "sat" and cex is not None
    monkeypatch.setattr(refine, "MILP_MAX_BINARIES", 0)
    monkeypatch.setattr(refine.milp_suits, "__defaults__", (0,))
    assert refine.auto_milp(model, spec, time.monotonic() + 30) is None


def _count_crown_passes(monkeypatch) -> dict:
    """Counts refine's own CROWN passes (the 'full bound pass' the MILP choice must avoid)."""
    import verifier.milp.refine as refine

    calls = {"n": 0}
    real = refine.crown_bounds

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(refine, "crown_bounds", counted)
    return calls


def test_milp_suits_decides_from_given_counts_without_a_bound_pass(monkeypatch):
    model = _net(0)
    lower, upper = _box(0)
    spec = make_spec([(lower, upper), (lower, upper)], [[[1.0, -1.0]]], [[0.0]])
    calls = _count_crown_passes(monkeypatch)
    assert milp_suits(model.graph, spec, max_binaries=5, unstable={0: 5, 1: 3})
    assert not milp_suits(model.graph, spec, max_binaries=5, unstable={0: 5, 1: 6})
    assert calls["n"] == 0
    # a region without a count gets one pass of its own
    assert milp_suits(model.graph, spec, unstable={0: 1}, deadline=time.monotonic() + 30)
    assert calls["n"] == 1


def test_milp_suits_size_prefilter_needs_no_bound_pass(monkeypatch):
    import verifier.milp.refine as refine

    model = _net(0)
    lower, upper = _box(0)
    spec = make_spec([(lower, upper)], [[[1.0, -1.0]]], [[0.0]])
    calls = _count_crown_passes(monkeypatch)
    monkeypatch.setattr(refine, "MILP_MAX_KINK_NEURONS", refine.kink_neurons(model.graph) - 1)
    assert not milp_suits(model.graph, spec, max_binaries=10_000)
    assert calls["n"] == 0


def test_milp_suits_pass_stops_within_its_time_share(monkeypatch):
    """The counting pass runs under a deadline of its own: one that cannot end in time
    means no MILP, not a stage that overruns (deadline already due: the pass stops at once)."""
    model = _net(0)
    lower, upper = _box(0)
    spec = make_spec([(lower, upper)], [[[1.0, -1.0]]], [[0.0]])
    calls = _count_crown_passes(monkeypatch)
    assert not milp_suits(model.graph, spec, max_binaries=10_000, deadline=time.monotonic())
    assert calls["n"] == 1


def test_auto_uses_the_cascade_counts(monkeypatch):
    """``auto`` on a net too big for input splitting: the MILP choice reads the unstable
    counts of the cascade's CROWN step, it runs no CROWN pass of its own."""
    import verifier.strategy as strategy
    from verifier.config import VerifyConfig

    layers = random_layers([20, 12, 12, 2], np.random.default_rng(3))
    model = onnx_mlp([(w.astype(np.float32).astype(np.float64), b) for w, b in layers])
    lo = np.full(20, -0.5)
    spec = make_spec([(lo, -lo)], [[[1.0, -1.0]]], [[1e3]])  # sat, but only MILP may say so
    monkeypatch.setattr(strategy, "_attack", lambda *args, **kwargs: None)
    calls = _count_crown_passes(monkeypatch)
    result = strategy.run_methods(model, spec, VerifyConfig(timeout=30), "cpu",
                                  time.monotonic() + 30)
    assert result.verdict == "sat" and result.method == "milp"
    assert calls["n"] == 0


def test_clip_kinks_count_as_binaries_and_clip_nets_may_be_decided():
    """A Clip net (kinks at its two ends, QDQ nets' saturation): each end inside a neuron's
    bounds is one binary of the encoding, and milp_suits counts exactly those."""
    from onnx import helper, numpy_helper

    from tests.milp.nets import _model
    from verifier.milp.encode import encode

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(size=6).astype(np.float32) * 0.3, "b0"),
             numpy_helper.from_array(np.float32(-0.2), "lo"),
             numpy_helper.from_array(np.float32(0.4), "hi"),
             numpy_helper.from_array(rng.normal(size=(2, 6)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b1")]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["z"], transB=1),
             helper.make_node("Clip", ["z", "lo", "hi"], ["c"]),
             helper.make_node("Gemm", ["c", "w1", "b1"], ["y"], transB=1)]
    model = _model(nodes, inits, (1, 3), (1, 2))
    lower, upper = -np.ones(3), np.ones(3)
    res = crown_bounds(model.graph, lower, upper)
    n = count_unstable(model.graph, res.intermediate)
    enc = encode(model.graph, lower, upper, res.intermediate, res.deltas)
    assert n == enc.n_unstable > 0
    spec = make_spec([(lower, upper)], [[[1.0, -1.0]]], [[0.0]])
    assert milp_suits(model.graph, spec, max_binaries=n)
    assert not milp_suits(model.graph, spec, max_binaries=n - 1)
