"""Sparse alpha (alpha only where an elementwise node's default planes leave a gap): sound
against sampled points, never looser than CROWN, and the same planes as the dense path at the
positions it optimises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine import alpha as alpha_mod
from bounds.engine.alpha import alpha_positions, column_alphas, optimize_alpha
from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import ColumnAlpha, PassCache
from bounds.types import Interval
from tests.bounds.nets import mlp

F64 = torch.float64


def _net(activation: str, seed: int, saturate: bool):
    """4-16-16-3 MLP; with ``saturate`` half of the first layer's biases push its neurons far
    from the kink or the S-curve's middle (stable Relus, flat sigmoids)."""
    rng = np.random.default_rng(seed)
    sizes = [4, 16, 16, 3]
    weights = [(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
               for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    if saturate:
        w, b = weights[0]
        b[:8] = np.where(rng.random(8) < 0.5, -12.0, 12.0)
        weights[0] = (w, b)
    return mlp(weights, activation)


def _box(seed: int, width: float) -> Interval:
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand((1, 1, 4), generator=gen, dtype=F64).float().to(F64)
    lo = (centre - width).float().to(F64)
    hi = (centre + width).float().to(F64)
    return Interval(lo, hi)


def _samples(box: Interval, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box.lower[0], box.upper[0]
    pts = (lo + (hi - lo) * torch.rand((n, *lo.shape), generator=gen, dtype=F64)).float()
    corners = torch.where(torch.rand((64, *lo.shape), generator=gen) < 0.5, lo, hi).float()
    return torch.cat([torch.minimum(torch.maximum(pts, lo.float()), hi.float()), corners])


def _coef(seed: int, rows: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn((1, rows, 1, 3), generator=gen, dtype=F64)


CASES = [(act, seed) for act in ("Relu", "Sigmoid", "Tanh") for seed in range(4)]


@pytest.mark.parametrize(("activation", "seed"), CASES)
def test_sparse_alpha_encloses_sampled_outputs(activation, seed):
    graph = _net(activation, seed, saturate=True)
    box = _box(seed, 0.6)
    coef = _coef(seed, 5)
    inter = compute_intermediate(graph, box, None, "crown")
    cache = PassCache()
    picked = [alpha_positions(inter, cache, graph.node(n)) for n in ("act0", "act1")]
    # the sparse path is taken: some node optimises a strict subset of its positions
    assert any(p is not None and p.numel() < 16 for p in picked)
    with torch.enable_grad():
        lower, alphas = optimize_alpha(inter, graph.outputs[0].name, coef, 10, cache=cache)
    crown = backward_bound(inter, graph.outputs[0].name, coef, cache=cache).lower
    assert torch.all(lower >= crown)
    assert all(v.shape == (1, 5, 1, 16) for v in alphas.values())  # dense for callers
    y = run_graph(graph, _samples(box, 2000, seed).to(F64))[0].to(F64)  # [N, 1, 3]
    values = torch.einsum("sj,nj->ns", coef[0, :, 0], y[:, 0])
    assert torch.all(values >= lower[0] - 1e-6), float((values - lower[0]).min())


@pytest.mark.parametrize(("activation", "seed"), CASES)
def test_sparse_intermediate_alpha_encloses_sampled_values(activation, seed):
    """Intermediate bounds refined by (sparse) alpha-CROWN contain every sampled value."""
    graph = _net(activation, seed, saturate=True)
    box = _box(seed, 0.6)
    inter = compute_intermediate(graph, box, None, "crown", alpha_iterations=5)
    pts = _samples(box, 2000, seed).to(F64)
    for name in ("lin1", "lin2"):
        y = _value(graph, name, pts)
        b = inter.bounds[name]
        assert torch.all(y >= b.lower[0] - 1e-6) and torch.all(y <= b.upper[0] + 1e-6)


def _value(graph, name: str, pts: torch.Tensor) -> torch.Tensor:
    """Value ``name`` of ``graph`` at ``pts`` (the graph cut after that node)."""
    from bounds.graph import Graph, TensorInfo

    nodes = graph.nodes[: [n.name for n in graph.nodes].index(name) + 1]
    cut = Graph(graph.inputs, (TensorInfo(name, graph.shape_of(name)),), tuple(nodes))
    return run_graph(cut, pts)[0].to(F64)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_column_planes_match_dense_planes_where_optimised(activation):
    """At the positions a ColumnAlpha covers the pass uses the same planes as a dense alpha
    with those values; elsewhere the rule's default planes."""
    from bounds.engine.crown import _Pass, _relaxation
    from bounds.registry import rules

    graph = _net(activation, 1, saturate=True)
    box = _box(1, 0.6)
    inter = compute_intermediate(graph, box, None, "crown")
    cache = PassCache()
    sparse = column_alphas(inter, 3, cache, before=graph.outputs[0].name)
    node = graph.node("act0")
    col = sparse["act0"]
    assert isinstance(col, ColumnAlpha) and 0 < col.index.numel() < 16
    dense = alpha_mod._initial(inter, node, 3).reshape(1, 3, 16).clone()
    dense[:, :, col.index] = col.values.detach()
    rule = rules().get(node.op)
    got = _relaxation(_Pass(inter, {"act0": col}, cache), node, rule)
    want = _relaxation(_Pass(inter, {"act0": dense.reshape(1, 3, 1, 16)}, cache), node, rule)
    base = _relaxation(_Pass(inter, {}, cache), node, rule)
    others = torch.ones(16, dtype=torch.bool)
    others[col.index] = False
    for field in ("lower_slope", "lower_offset", "upper_slope", "upper_offset"):
        g = getattr(got, field).reshape(1, 3, 16)
        w = torch.broadcast_to(getattr(want, field), (1, 3, 1, 16)).reshape(1, 3, 16)
        d = torch.broadcast_to(getattr(base, field), (1, 1, 16)).reshape(1, 1, 16)
        assert torch.equal(g[:, :, col.index], w[:, :, col.index])
        assert torch.equal(g[:, :, others], d[:, :, others].expand(1, 3, -1))


def test_tangent_alphas_step_at_their_share_of_the_step_size():
    """Smooth ops' tangent-point alphas move by TANGENT_STEP_SHARE of the step, Relu slopes by
    the whole step (a mixed net has both groups)."""
    from bounds.engine.alpha import TANGENT_STEP_SHARE, step_groups
    from bounds.graph import Graph, Node

    graph = _net("Relu", 0, saturate=False)
    nodes = list(graph.nodes)
    nodes[1] = Node("act0", "Sigmoid", nodes[1].inputs, nodes[1].shape)
    graph = Graph(graph.inputs, graph.outputs, tuple(nodes))
    params = {"act0": torch.zeros(1), "act1": torch.zeros(1)}
    groups = {tuple(g.params): g.lr for g in step_groups(graph, params, 0.1)}
    assert groups == {("act0",): 0.1 * TANGENT_STEP_SHARE, ("act1",): 0.1}
    assert TANGENT_STEP_SHARE < 1
