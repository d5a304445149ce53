"""alpha-CROWN's passes with the start node's step taken once (``alpha._Passes``): the same bound
as the whole pass for default and optimised relaxations, rounding allowances counted once; and
deep smooth nets with alpha on every intermediate value enclose sampled values and are never
looser than CROWN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.alpha import _Passes, column_alphas, optimize_alpha
from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import ColumnAlpha, PassCache
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, TensorInfo
from bounds.types import Interval
from tests.bounds.nets import mlp, with_activation

F64 = torch.float64


# a Clip with both kinks where the intermediate intervals hold them (ReLU6-like)
CLIP = {"min": -0.5, "max": 1.0}


def _net(activation: str, seed: int, sizes=(6, 24, 24, 24, 4)):
    rng = np.random.default_rng(seed)
    weights = [(rng.normal(size=(o, i)) * 1.5 / np.sqrt(i), rng.normal(size=o) * 0.5)
               for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    if activation == "Clip":
        return with_activation(mlp(weights), "Clip", CLIP)
    return mlp(weights, activation)


def _box(seed: int, width: float, n: int = 6) -> Interval:
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand((1, 1, n), generator=gen, dtype=F64).float().to(F64)
    return Interval((centre - width).float().to(F64), (centre + width).float().to(F64))


def _samples(box: Interval, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box.lower[0], box.upper[0]
    pts = lo + (hi - lo) * torch.rand((n, *lo.shape), generator=gen, dtype=F64)
    corners = torch.where(torch.rand((64, *lo.shape), generator=gen) < 0.5, lo, hi)
    pts = torch.cat([pts, corners]).float()
    return torch.minimum(torch.maximum(pts, lo.float()), hi.float()).to(F64)


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh", "Relu"])
@pytest.mark.parametrize("start", ["lin1", "lin2", "lin3"])
def test_passes_from_the_start_input_equal_the_whole_pass(activation, start):
    graph = _net(activation, 3)
    inter = compute_intermediate(graph, _box(3, 0.3), None, "crown")
    assert any(d is not None and bool((d > 0).any()) for d in inter.deltas.values())
    gen = torch.Generator().manual_seed(5)
    coef = torch.randn((1, 7, *graph.shape_of(start)), generator=gen, dtype=F64)
    cache = PassCache()
    passes = _Passes(inter, start, coef, cache)
    assert passes.const is not None and passes.start != start  # the shortcut is taken
    whole = backward_bound(inter, start, coef, cache=cache).lower
    assert torch.allclose(passes.lower(None), whole, rtol=1e-12, atol=1e-12)
    alphas = column_alphas(inter, 7, cache, before=start)
    with torch.no_grad():
        for a in alphas.values():
            values = a.values if isinstance(a, ColumnAlpha) else a
            values.uniform_(0, 1, generator=gen)
    whole = backward_bound(inter, start, coef, alphas=alphas, cache=cache).lower
    assert torch.allclose(passes.lower(alphas), whole, rtol=1e-12, atol=1e-12)


def test_no_shortcut_from_the_first_layer():
    """The first Linear reads the graph's input: the pass runs whole."""
    graph = _net("Sigmoid", 1)
    inter = compute_intermediate(graph, _box(1, 0.3), None, "crown")
    coef = torch.ones((1, 2, *graph.shape_of("lin0")), dtype=F64)
    passes = _Passes(inter, "lin0", coef, PassCache())
    assert passes.const is None and passes.start == "lin0"


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh", "Clip"])
@pytest.mark.parametrize("seed", range(3))
def test_deep_smooth_alpha_encloses_samples_and_beats_crown(activation, seed):
    """Alpha on every intermediate value and the final bound (the cascade's last step):
    sampled intermediate values inside their bounds, spec rows above their lower bounds,
    never looser than CROWN (and tighter on some row: Clip had no alpha before)."""
    graph = _net(activation, seed)
    box = _box(seed, 0.4)
    gen = torch.Generator().manual_seed(seed + 10)
    coef = torch.randn((1, 5, 4), generator=gen, dtype=F64)
    rhs = torch.zeros((1, 5), dtype=F64)
    crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    with torch.enable_grad():
        res = bound_spec(graph, box, coef, rhs,
                         BoundOptions(method="alpha", intermediate_alpha_iterations=5))
    assert torch.all(res.lower >= crown - 1e-9)
    assert torch.any(res.lower > crown + 1e-3)
    pts = _samples(box, 3000, seed)
    y = run_graph(graph, pts)[0].to(F64)  # [N, 1, 4]
    values = torch.einsum("sj,nj->ns", coef[0], y[:, 0])
    assert torch.all(values >= res.lower[0] - 1e-6), float((values - res.lower[0]).min())
    for name in ("lin1", "lin2", "lin3"):
        nodes = graph.nodes[: [n.name for n in graph.nodes].index(name) + 1]
        cut = Graph(graph.inputs, (TensorInfo(name, graph.shape_of(name)),), tuple(nodes))
        v = run_graph(cut, pts)[0].to(F64)
        b = res.intermediate[name]
        assert torch.all(v >= b.lower[0] - 1e-6) and torch.all(v <= b.upper[0] + 1e-6)


def test_optimize_alpha_with_the_shortcut_never_loses_to_crown():
    graph = _net("Sigmoid", 7)
    inter = compute_intermediate(graph, _box(7, 0.5), None, "crown")
    coef = torch.randn((1, 6, *graph.shape_of("lin3")), generator=torch.Generator().manual_seed(2),
                       dtype=F64)
    cache = PassCache()
    crown = backward_bound(inter, "lin3", coef, cache=cache).lower
    with torch.enable_grad():
        lower, _ = optimize_alpha(inter, "lin3", coef, 8, cache=cache)
    assert torch.all(lower >= crown)


@pytest.mark.parametrize("start", ["c1", "c2", "c3"])
def test_passes_on_convolutional_values_equal_the_whole_pass(start):
    """Start rows on a convolutional value (the pass may carry window coefficients, for which
    no shortcut is taken): the same bound as the whole pass, default and with alphas."""
    from tests.bounds.test_conv_patches import _box as conv_box
    from tests.bounds.test_conv_patches import _resnet_2d

    graph = _resnet_2d()
    inter = compute_intermediate(graph, conv_box(graph), None, "crown")
    numel = int(np.prod(graph.shape_of(start)))
    coef = torch.zeros((2, 6, numel), dtype=F64)
    coef[:, torch.arange(6), torch.arange(6) * 3] = 1.0
    coef = torch.cat([coef, -coef], 1).reshape(2, 12, *graph.shape_of(start))
    cache = PassCache()
    passes = _Passes(inter, start, coef, cache)
    whole = backward_bound(inter, start, coef, cache=cache).lower
    assert torch.allclose(passes.lower(None), whole, rtol=1e-12, atol=1e-12)
    alphas = column_alphas(inter, 12, cache, before=start)
    whole = backward_bound(inter, start, coef, alphas=alphas, cache=cache).lower
    assert torch.allclose(passes.lower(alphas), whole, rtol=1e-12, atol=1e-12)
    with torch.enable_grad():
        lower, _ = optimize_alpha(inter, start, coef, 3, cache=cache)
    assert torch.all(lower >= backward_bound(inter, start, coef, cache=cache).lower)


@pytest.mark.parametrize("alpha_iterations", [0, 2])
@pytest.mark.parametrize("net", ["_resnet_2d", "_conv_1d", "_conv_3d"])
def test_intermediate_window_rows_give_the_dense_rows_bounds(net, alpha_iterations,
                                                             monkeypatch):
    """Intermediate bounds of convolutional values start from one-cell window rows
    (patches.neuron_rows): the same bounds as dense one-hot rows, sampled points inside."""
    import bounds.engine.adjoint_precision as adjoint_precision
    import bounds.engine.intermediate as intermediate
    from tests.bounds import test_conv_patches as conv

    # window and dense rows compared to 1e-7: float32 adjoints would round differently in
    # each (test_adjoint_precision.py checks them)
    monkeypatch.setattr(adjoint_precision, "ENABLED", False)
    graph = getattr(conv, net)()
    box = conv._box(graph)
    windows = compute_intermediate(graph, box, None, "crown", alpha_iterations=alpha_iterations)
    monkeypatch.setattr(intermediate, "conv_like", lambda graph, name: 0)
    dense = compute_intermediate(graph, box, None, "crown", alpha_iterations=alpha_iterations)
    assert any(conv.windows.conv_like(graph, n.name) for n in graph.nodes)
    for name, b in dense.bounds.items():
        w = windows.bounds[name]
        torch.testing.assert_close(w.lower, b.lower, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(w.upper, b.upper, rtol=1e-7, atol=1e-7)
    x = box.lower + (box.upper - box.lower) * torch.rand(
        (64, *box.lower.shape), generator=torch.Generator().manual_seed(1), dtype=F64)
    values = conv._forward_all(graph, x.reshape(-1, *box.lower.shape[1:]))
    for name, v in values.items():
        v = v.reshape(64, *box.lower.shape[:1], *v.shape[1:])
        b = windows.bounds[name]
        assert torch.all(v >= b.lower - 1e-6) and torch.all(v <= b.upper + 1e-6), name
