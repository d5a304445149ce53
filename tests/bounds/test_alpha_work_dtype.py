"""alpha-CROWN's iterations in float32 (``work_dtype``): the bound reported is a float64 pass
with the alphas found, never a float32 number; sound against sampled points on every path
(final bound, intermediate alpha on dense and window rows, structured alphas, warm starts),
never looser than CROWN, and close to the float64 loop's bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine import alpha as alpha_mod
from bounds.engine import guide as guide_mod
from bounds.engine import work_dtype
from bounds.engine.alpha import optimize_alpha
from bounds.engine.analysis import largest_constant
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import PassCache
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.engine.work_dtype import LARGEST_WORK_BOUND, lowered_view, lowers
from bounds.types import Interval
from tests.bounds.spies import spy
from tests.bounds.test_alpha_passes import _box, _net, _samples

F64, F32 = torch.float64, torch.float32


@pytest.fixture(autouse=True)
def _small_passes_in_float32(monkeypatch):
    """These nets are small: let their passes take the float32 path (see the last test)."""
    monkeypatch.setattr(work_dtype, "MIN_WORK_ELEMENTS", 0)


def _spec(seed: int, rows: int = 5, n_out: int = 4):
    gen = torch.Generator().manual_seed(seed + 7)
    coef = torch.randn((1, rows, n_out), generator=gen, dtype=F64)
    return coef, torch.zeros((1, rows), dtype=F64)


def _sampled_min(graph, box, coef, rhs, seed) -> torch.Tensor:
    y = run_graph(graph, _samples(box, 3000, seed))[0].to(F64)  # [N, 1, n_out]
    return (torch.einsum("sj,nj->ns", coef[0], y[:, 0]) - rhs[0]).min(0).values


CASES = [(act, seed) for act in ("Relu", "Sigmoid", "Tanh") for seed in range(3)]


@pytest.mark.parametrize(("activation", "seed"), CASES)
@pytest.mark.parametrize("inter_alpha", [0, 3])
def test_float32_work_encloses_samples_and_beats_crown(activation, seed, inter_alpha):
    graph, box = _net(activation, seed), _box(seed, 0.4)
    coef, rhs = _spec(seed)
    options = BoundOptions(method="alpha", alpha_iterations=10,
                           intermediate_alpha_iterations=inter_alpha)
    res = bound_spec(graph, box, coef, rhs, options)
    assert res.lower.dtype == F64
    crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    if inter_alpha == 0:  # (intermediate alpha gives other intermediate bounds)
        assert torch.all(res.lower >= crown)
    assert torch.all(res.lower[0] <= _sampled_min(graph, box, coef, rhs, seed) + 1e-6)


@pytest.mark.parametrize(("activation", "seed"), CASES)
def test_float32_work_is_close_to_the_float64_loop(activation, seed):
    """Same loop, other precision: the bounds differ by the trajectories' rounding only
    (mostly below 1e-6; Adam's steps amplify float32 gradient noise where a gradient is near
    0: Tanh seed 2 with intermediate alpha differs by 0.3% of the bounds' scale)."""
    graph, box = _net(activation, seed), _box(seed, 0.4)
    coef, rhs = _spec(seed)
    bounds = [bound_spec(graph, box, coef, rhs,
                         BoundOptions(method="alpha", alpha_iterations=10,
                                      intermediate_alpha_iterations=2, work_float32=f32)).lower
              for f32 in (True, False)]
    scale = float(bounds[1].abs().max())
    torch.testing.assert_close(bounds[0], bounds[1], rtol=0, atol=1e-2 * scale)


def test_no_float32_number_reaches_the_reported_bound(monkeypatch):
    """A float32 loop that claims bounds far above the truth changes nothing reported: the
    bound is the float64 pass with the alphas found (or CROWN's), below sampled points.
    (A Relu net: S-shaped chains take guide passes, see test_alpha_guide.)"""
    graph, box = _net("Relu", 1), _box(1, 0.4)
    coef, rhs = _spec(1)
    honest = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha")).lower
    search = alpha_mod._search

    def lying(inter, *args, **kwargs):
        best, found = search(inter, *args, **kwargs)
        return (best + 1e6 if inter.dtype == F32 else best), found

    monkeypatch.setattr(alpha_mod, "_search", lying)
    res = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha"))
    assert torch.equal(res.lower, honest)
    assert torch.all(res.lower[0] <= _sampled_min(graph, box, coef, rhs, 1) + 1e-6)


def test_the_reported_bound_is_one_float64_pass_with_the_alphas_found(monkeypatch):
    """optimize_alpha's bound: max(CROWN, the float64 pass with the alphas found), the alphas
    returned in float64."""
    graph, box = _net("Tanh", 2), _box(2, 0.4)
    inter = compute_intermediate(graph, box, None, "crown")
    coef = _spec(2)[0].reshape(1, 5, 1, 4)
    out = graph.outputs[0].name
    real = alpha_mod.backward_bound
    passes = spy(monkeypatch, alpha_mod, "backward_bound")
    guides = spy(monkeypatch, guide_mod.ChainGuide, "lower")
    crown = real(inter, out, coef).lower
    with torch.enable_grad():
        lower, alphas = optimize_alpha(inter, out, coef, 8, cache=PassCache(), known=crown,
                                       work_dtype=F32)
    f64 = [c.result.lower for c in passes if c.args[0].dtype == F64]
    assert len(f64) == 1  # one float64 pass: the final one (CROWN was known)
    assert torch.equal(lower, torch.maximum(crown, f64[0]))
    assert all(v.dtype == F64 for v in alphas.values())
    # (the iterations: guide passes in float32)
    assert [g.dtype for g in guides.results] == [F32] * 8


def test_window_rows_and_warm_starts_in_float32():
    """Intermediate alpha from one-cell window rows of a convolutional net, then a final
    alpha warm-started from float64 alphas: sampled values inside every bound."""
    from tests.bounds import test_conv_patches as conv

    graph = conv._resnet_2d()
    box = conv._box(graph)
    inter = compute_intermediate(graph, box, None, "crown", alpha_iterations=2,
                                 work_dtype=F32)
    x = box.lower + (box.upper - box.lower) * torch.rand(
        (64, *box.lower.shape), generator=torch.Generator().manual_seed(3), dtype=F64)
    values = conv._forward_all(graph, x.reshape(-1, *box.lower.shape[1:]))
    for name, v in values.items():
        v = v.reshape(64, *box.lower.shape[:1], *v.shape[1:])
        b = inter.bounds[name]
        assert b.lower.dtype == F64
        assert torch.all(v >= b.lower - 1e-6) and torch.all(v <= b.upper + 1e-6), name
    out = graph.outputs[0].name
    numel = int(np.prod(graph.shape_of(out)))
    coef = torch.eye(numel, dtype=F64)[:3].reshape(1, 3, *graph.shape_of(out))
    coef = coef.expand(box.lower.shape[0], *coef.shape[1:])
    with torch.enable_grad():
        _, warm = optimize_alpha(inter, out, coef, 2)
        lower, _ = optimize_alpha(inter, out, coef, 3, warm=warm, work_dtype=F32)
    y = values[out].reshape(64, box.lower.shape[0], -1)
    worst = torch.einsum("bsj,nbj->nbs", coef.flatten(2), y).min(0).values
    assert torch.all(lower <= worst + 1e-6)


def test_structured_alphas_in_float32():
    """Window max (MaxPool) alphas optimised in float32: sampled points inside."""
    from tests.bounds.structured_nets import maxpool_cnn

    graph = maxpool_cnn(0)
    shape = graph.inputs[0].shape
    gen = torch.Generator().manual_seed(0)
    centre = torch.rand((1, *shape), generator=gen, dtype=F64)
    box = Interval(centre - 0.3, centre + 0.3)
    n_out = int(np.prod(graph.outputs[0].shape))
    coef = torch.randn((1, 4, n_out), generator=gen, dtype=F64)
    rhs = torch.zeros((1, 4), dtype=F64)
    res = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha", alpha_iterations=6))
    crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    assert torch.all(res.lower >= crown)
    pts = box.lower + (box.upper - box.lower) * torch.rand((2000, *shape), generator=gen,
                                                            dtype=F64)
    y = run_graph(graph, pts.float())[0].to(F64).reshape(2000, -1)
    assert torch.all(res.lower[0] <= (y @ coef[0].T).min(0).values + 1e-6)


def test_lowered_view_recasts_only_new_intervals_and_refuses_huge_bounds():
    graph, box = _net("Sigmoid", 0), _box(0, 0.4)
    inter = compute_intermediate(graph, box, None, "ibp")
    cache = PassCache()
    low, low_cache = lowered_view(inter, cache, F32)
    assert lowers(inter, F32) and not lowers(inter, F64) and not lowers(inter, None)
    assert low.bounds["lin1"].lower.dtype == F32
    # alpha-CROWN's work view leaves the rounding allowances to the float64 pass; the copies
    # that BaB's loops steer by keep them: on deep conv nets they are large enough (oval21
    # cifar_deep_kw img5168) that loops steering without them keep domains whose float64
    # pass misses its target by them (unsat in 22 s instead of 7)
    assert any(d is not None for d in inter.deltas.values()) and not low.deltas
    steered = work_dtype.cast_intermediates(inter, F32)
    assert steered.deltas.keys() == inter.deltas.keys()
    assert all((d is None) == (steered.deltas[k] is None) for k, d in inter.deltas.items())
    memo = low_cache.relaxations(low.bounds)
    memo["act1"] = "planes of the old interval"
    memo["act0"] = "kept"
    kept = low.bounds["lin0"]
    old = inter.bounds["lin1"]
    inter.bounds["lin1"] = Interval(old.lower + 0.01, old.upper - 0.01)
    again, _ = lowered_view(inter, cache, F32)
    assert again is low and again.bounds["lin0"] is kept and not again.deltas
    torch.testing.assert_close(again.bounds["lin1"].lower, (old.lower + 0.01).float())
    assert "act1" not in memo and memo["act0"] == "kept"
    inter.bounds["lin2"] = Interval(old.lower - 2 * LARGEST_WORK_BOUND, old.upper)
    assert lowered_view(inter, cache, F32) is None
    with torch.enable_grad():  # and optimize_alpha then keeps float64 throughout
        lower, _ = optimize_alpha(inter, "lin3", _spec(0)[0].reshape(1, 5, 1, 4), 2,
                                  cache=cache, work_dtype=F32)
    assert lower.dtype == F64


def test_small_passes_keep_float64(monkeypatch):
    """Below MIN_WORK_ELEMENTS (rows x widest value) the loop stays in float64: the same
    bound as without a work dtype, no float32 pass."""
    monkeypatch.setattr(work_dtype, "MIN_WORK_ELEMENTS", 1 << 15)
    graph, box = _net("Tanh", 2), _box(2, 0.4)
    inter = compute_intermediate(graph, box, None, "crown")
    coef = _spec(2)[0].reshape(1, 5, 1, 4)
    assert not lowers(inter, F32, 5, 24)
    passes = spy(monkeypatch, alpha_mod, "backward_bound")
    with torch.enable_grad():
        low, _ = optimize_alpha(inter, graph.outputs[0].name, coef, 4, work_dtype=F32)
        plain, _ = optimize_alpha(inter, graph.outputs[0].name, coef, 4)
    assert all(c.args[0].dtype != F32 for c in passes) and torch.equal(low, plain)


def test_few_rows_through_a_wide_weight_take_float32(monkeypatch):
    """Below MIN_WORK_ELEMENTS but with products of MIN_PRODUCT_WORK multiply-adds or more
    (rows x the largest weight: few spec rows through a 784-wide input layer, as on ERAN's
    and mnistfc's nets) the loop runs in float32, and the bound reported is still a float64
    pass that encloses sampled outputs; ACAS Xu-sized products stay in float64."""
    monkeypatch.setattr(work_dtype, "MIN_WORK_ELEMENTS", 1 << 15)
    sizes = (784, 200, 200, 4)
    graph, box = _net("Sigmoid", 1, sizes), _box(1, 0.02, 784)
    inter = compute_intermediate(graph, box, None, "crown")
    assert largest_constant(graph) == 784 * 200
    assert lowers(inter, F32, 9, 784, 784 * 200) and not lowers(inter, F32, 5, 50, 2500)
    guides = spy(monkeypatch, alpha_mod, "chain_guide")
    coef, rhs = _spec(4, rows=3)
    with torch.enable_grad():
        lower, _ = optimize_alpha(inter, graph.outputs[0].name, coef.reshape(1, 3, 1, 4), 3,
                                  work_dtype=F32)
    assert guides and all(c.args[0].dtype == F32 for c in guides)
    assert lower.dtype == F64
    assert bool((lower[0] - rhs[0] <= _sampled_min(graph, box, coef, rhs, 4) + 1e-9).all())
