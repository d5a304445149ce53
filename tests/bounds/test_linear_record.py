"""The intermediate linear bounds bound_spec can record (``record_linear``, used by input
splitting's look-ahead) enclose every sampled value, on the box and on sub-boxes of it."""

from __future__ import annotations

import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


def _boxes(n_in: int, seed: int) -> Interval:
    """Three boxes: wide, medium and tiny (the tiny one leaves most neurons stable, so some
    values are refined for only part of the batch)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn((3, 1, n_in), generator=gen, dtype=F64)
    radius = torch.tensor([1.0, 0.3, 1e-4], dtype=F64).reshape(3, 1, 1)
    return Interval(centre - radius, centre + radius)


def _sample(lower: torch.Tensor, upper: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """[B, n, *shape] points in each box, corners included."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((lower.shape[0], n, *lower.shape[1:]), generator=gen, dtype=F64)
    u[:, :16] = (u[:, :16] > 0.5).to(F64)
    return lower.unsqueeze(1) + (upper - lower).unsqueeze(1) * u


def _check_enclosed(graph, rec_all, lower, upper, seed):
    b = lower.shape[0]
    pts = _sample(lower, upper, 300, seed)
    values = run_graph(graph, pts.reshape(-1, *lower.shape[1:]), keep_all=True)
    x = pts.reshape(b, 300, -1)
    for name, rec in rec_all.items():
        v = values[name].reshape(b, 300, -1)  # [B, P, numel]
        lo = torch.einsum("bnd,bpd->bpn", rec.a_lo, x) + rec.c_lo.unsqueeze(1)
        hi = torch.einsum("bnd,bpd->bpn", rec.a_hi, x) + rec.c_hi.unsqueeze(1)
        tol = 1e-9 * (1 + v.abs())
        assert bool((lo <= v + tol).all()), name
        assert bool((hi >= v - tol).all()), name
        box = rec.concretize(lower.flatten(1), upper.flatten(1), graph.shape_of(name))
        assert bool((box.lower.flatten(1).unsqueeze(1) <= v + tol).all()), name
        assert bool((box.upper.flatten(1).unsqueeze(1) >= v - tol).all()), name


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recorded_linear_bounds_enclose_values(activation, seed):
    graph = random_mlp([4, 12, 12, 12, 3], seed=seed, activation=activation)
    box = _boxes(4, seed)
    coef = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(seed), dtype=F64)
    res = bound_spec(graph, box, coef, torch.zeros((1, 2), dtype=F64),
                     BoundOptions(method="crown"), record_linear=True)
    recorded = res.intermediates.linear_bounds
    assert recorded, "nothing recorded"
    for rec in recorded.values():  # some positions really carry a linear bound
        assert bool(torch.isfinite(rec.c_lo).any())
    _check_enclosed(graph, recorded, box.lower, box.upper, seed)
    # a sub-box of each box: the parent's linear bounds still hold there
    gen = torch.Generator().manual_seed(seed + 100)
    t = torch.rand(box.lower.shape, generator=gen, dtype=F64)
    mid = box.lower + (box.upper - box.lower) * t
    _check_enclosed(graph, recorded, box.lower, mid, seed + 1)
    _check_enclosed(graph, recorded, mid, box.upper, seed + 2)


def test_no_recording_by_default():
    graph = random_mlp([4, 8, 2], seed=0)
    res = bound_spec(graph, _boxes(4, 0), torch.ones((1, 1, 2), dtype=F64),
                     torch.zeros((1, 1), dtype=F64), BoundOptions(method="crown"))
    assert res.intermediates.linear_bounds is None
