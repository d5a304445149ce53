"""The fused Relu step with dense alphas (``kink_step``): the same bound and gradients as the
generic step through ``relu_relax``'s planes, bounds that enclose sampled outputs for random
alphas, the step's own inequality on sampled points, and broadcast alphas' gradient shapes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.kink_step import KinkStep
from bounds.engine.results import PassCache
from bounds.registry import rules
from bounds.rules.relu import relu_alpha_planes, relu_relax
from tests.bounds.test_sparse_alpha import _box, _coef, _net, _samples

F64 = torch.float64


def _random_alphas(inter, rows: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n.name: torch.rand((1, rows, *n.shape), generator=gen, dtype=F64)
            .requires_grad_(True) for n in inter.graph.nodes if n.op == "Relu"}


def _pass(inter, coef, alphas: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.enable_grad():
        lower = backward_bound(inter, inter.graph.outputs[0].name, coef, alphas=alphas,
                               cache=PassCache()).lower
        grads = torch.autograd.grad(lower.sum(), list(alphas.values()))
    return lower.detach(), list(grads)


@pytest.mark.parametrize("seed", range(4))
def test_fused_step_matches_generic_planes_and_encloses_points(seed, monkeypatch):
    graph = _net("Relu", seed, saturate=True)
    box = _box(seed, 0.6)
    coef = _coef(seed, 5)
    inter = compute_intermediate(graph, box, None, "crown")
    alphas = _random_alphas(inter, 5, seed)
    lower, grads = _pass(inter, coef, alphas)
    y = run_graph(graph, _samples(box, 2000, seed).to(F64))[0].to(F64)
    values = torch.einsum("sj,nj->ns", coef[0, :, 0], y[:, 0])
    assert torch.all(values >= lower[0] - 1e-6), float((values - lower[0]).min())
    # the reference: the engine's generic step (relu_relax's planes, autograd's gradient)
    registry = rules()
    monkeypatch.setitem(registry._entries, "Relu",
                        dataclasses.replace(registry.get("Relu"), alpha_planes=None))
    want, want_grads = _pass(inter, coef, alphas)
    torch.testing.assert_close(lower, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def _bounds(gen, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, n] input intervals: a third inactive, a third active, a third across 0."""
    centre = torch.randn((1, n), generator=gen, dtype=F64) * 2
    centre[:, : n // 3] = -3 - centre[:, : n // 3].abs()
    centre[:, n // 3: 2 * n // 3] = 3 + centre[:, n // 3: 2 * n // 3].abs()
    centre[:, 2 * n // 3:] = centre[:, 2 * n // 3:] * 0.1
    radius = torch.rand((1, n), generator=gen, dtype=F64) + 0.5
    return centre - radius, centre + radius


@pytest.mark.parametrize("seed", range(3))
def test_step_is_a_lower_bound_on_sampled_points(seed):
    """A . relu(x) >= A' . x + offset for x in [l, u], any alpha in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    lower, upper = _bounds(gen, 30)
    a = torch.randn((1, 4, 30), generator=gen, dtype=F64)
    alpha = torch.rand((1, 4, 30), generator=gen, dtype=F64)
    planes = [t.unsqueeze(1) for t in relu_alpha_planes(lower, upper)]
    out, offset = KinkStep.apply(a, alpha, *planes)
    x = lower + (upper - lower) * torch.rand((500, 1, 30), generator=gen, dtype=F64)
    exact = torch.einsum("bsn,kbn->kbs", a, torch.relu(x))
    linear = torch.einsum("bsn,kbn->kbs", out, x) + offset
    assert bool((exact >= linear - 1e-9).all())


def test_planes_are_relu_relax_planes():
    gen = torch.Generator().manual_seed(5)
    lower, upper = _bounds(gen, 30)
    alpha = torch.rand((1, 30), generator=gen, dtype=F64)
    fixed, mask, up_s, up_o = relu_alpha_planes(lower, upper)
    rel = relu_relax(None, lower, upper, alpha)
    assert torch.equal(fixed + mask * alpha, rel.lower_slope)
    assert torch.equal(up_s, rel.upper_slope) and torch.equal(up_o, rel.upper_offset)
    assert not bool(rel.lower_offset.any())


def test_broadcast_alpha_gets_a_gradient_of_its_own_shape():
    gen = torch.Generator().manual_seed(7)
    lower, upper = _bounds(gen, 12)
    planes = [t.unsqueeze(1) for t in relu_alpha_planes(lower, upper)]
    a = torch.randn((2, 3, 12), generator=gen, dtype=F64, requires_grad=True)
    shared = torch.rand((2, 1, 12), generator=gen, dtype=F64, requires_grad=True)
    out, offset = KinkStep.apply(a, shared, *[p.expand(2, 1, 12) for p in planes])
    (out.sum() + offset.sum()).backward()
    assert shared.grad.shape == shared.shape and a.grad.shape == a.shape
    full = shared.detach().expand(2, 3, 12).clone().requires_grad_(True)
    out2, offset2 = KinkStep.apply(a.detach(), full, *[p.expand(2, 1, 12) for p in planes])
    (out2.sum() + offset2.sum()).backward()
    torch.testing.assert_close(shared.grad, full.grad.sum(1, keepdim=True))


def test_bounds_with_a_gradient_take_the_generic_step():
    """Where a Relu's input bounds carry a gradient the fused step (which passes none to
    them) stands aside: the gradient reaches the bounds."""
    from bounds.types import Interval

    graph = _net("Relu", 0, saturate=False)
    box = _box(0, 0.6)
    inter = compute_intermediate(graph, box, None, "crown")
    relu = next(n for n in graph.nodes if n.op == "Relu")
    x = inter.bounds[relu.dynamic_inputs[0]]
    lower = x.lower.clone().requires_grad_(True)
    inter.bounds[relu.dynamic_inputs[0]] = Interval(lower, x.upper)
    alphas = {relu.name: torch.full((1, 5, *relu.shape), 0.5, dtype=F64)}
    with torch.enable_grad():
        bound = backward_bound(inter, graph.outputs[0].name, _coef(0, 5), alphas=alphas,
                               cache=PassCache()).lower
        (grad,) = torch.autograd.grad(bound.sum(), [lower])
    assert grad is not None and bool(grad.ne(0).any())
