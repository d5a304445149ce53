"""Which positions intermediate CROWN tightens (intermediate._positions_to_refine): where every
consumer of a value is piecewise linear with all its kinks at 0 (Relu, LeakyRelu, Abs), only
the positions whose interval holds 0 inside; elsewhere every position. The bounds must still
enclose sampled points, and leaving the stable positions out must leave the final bound as it
was up to the rounding allowances (the consumers are exact there; only the allowances, which
follow the intervals' magnitudes, move)."""

from __future__ import annotations

import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64
SIZES = [5, 32, 32, 32, 3]


@pytest.fixture(autouse=True)
def _float64_adjoints(monkeypatch):
    """Passes over different row sets are compared closely: float32 adjoints would round
    differently with different row counts (test_adjoint_precision.py covers them)."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _box(radius: float, seed: int = 3, batch: int = 2) -> Interval:
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, 1, SIZES[0]), generator=g, dtype=F64)
    return Interval(centre - radius, centre + radius)


def _refined_rows(graph, box, monkeypatch, every_position: bool) -> tuple[dict, object]:
    """Rows CROWN bounded per value, and the intermediates; ``every_position``: refine all
    positions (what LeakyRelu and Abs inputs got before)."""
    rows: dict[str, int] = {}
    original = intermediate.crown_interval

    def counted(inter, name, mask, *args, **kwargs):
        rows[name] = rows.get(name, 0) + int(mask.sum())
        return original(inter, name, mask, *args, **kwargs)

    monkeypatch.setattr(intermediate, "crown_interval", counted)
    if every_position:
        monkeypatch.setattr(intermediate, "linear_by_sign", lambda op: False)
    inter = compute_intermediate(graph, box, method="crown")
    monkeypatch.undo()
    return rows, inter


@pytest.mark.parametrize("activation", ["LeakyRelu", "Abs"])
def test_only_unstable_positions_are_refined_and_bounds_hold(activation, monkeypatch):
    graph = random_mlp(SIZES, seed=11, activation=activation)
    box = _box(0.1)
    rows, inter = _refined_rows(graph, box, monkeypatch, every_position=False)
    all_rows, _ = _refined_rows(graph, box, monkeypatch, every_position=True)
    # (lin0's rows: the first Linear's bounds are exact from IBP)
    assert all(0 < rows[name] <= all_rows[name] for name in ("lin1", "lin2"))
    assert rows["lin1"] + rows["lin2"] < all_rows["lin1"] + all_rows["lin2"]
    g = torch.Generator().manual_seed(4)
    x = box.lower + (box.upper - box.lower) * torch.rand(
        (400, *box.lower.shape), generator=g, dtype=F64)
    values = {"x": x}
    for node in graph.nodes:
        w = torch.as_tensor(node.consts[1], dtype=F64) if node.op == "Linear" else None
        v = values[node.inputs[0]]
        if node.op == "Linear":
            values[node.name] = v @ w.T + torch.as_tensor(node.consts[2], dtype=F64)
        else:
            values[node.name] = (v.abs() if activation == "Abs"
                                 else torch.where(v >= 0, v, 0.01 * v))
        b = inter.bounds[node.name]
        slack = 1e-9 * (1 + values[node.name].abs())
        assert bool((values[node.name] >= b.lower - slack).all())
        assert bool((values[node.name] <= b.upper + slack).all())


@pytest.mark.parametrize("activation", ["LeakyRelu", "Abs"])
def test_the_final_bound_moves_only_by_the_rounding_allowances(activation, monkeypatch):
    graph = random_mlp(SIZES, seed=12, activation=activation)
    box = _box(0.1, seed=5)
    coef = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]], dtype=F64).expand(2, -1, -1)
    rhs = torch.zeros((2, 2), dtype=F64)
    results = {}
    for every in (False, True):
        if every:
            monkeypatch.setattr(intermediate, "linear_by_sign", lambda op: False)
        results[every] = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
        monkeypatch.undo()
    torch.testing.assert_close(results[False], results[True], rtol=1e-3, atol=1e-6)
