"""GridSample's CROWN step (bounds/rules/grid_sample.py): a . y >= coef_x . x + offset at
points sampled in boxes of the image and the grid, for every padding and both modes, on grid
boxes from a point to the whole image and beyond; nearly exact where the grid is a point."""

from __future__ import annotations

import itertools

import pytest
import torch

from bounds.graph import Node
from bounds.registry import rules
from bounds.types import Interval

F64 = torch.float64
RULE = rules().get("GridSample")
DATA, GRID, OUT = (1, 2, 4, 5), (1, 3, 2, 2), (1, 2, 3, 2)
CASES = list(itertools.product(("linear", "nearest"), ("zeros", "border", "reflection"), (0, 1)))


def _node(mode, padding, align) -> Node:
    return Node("y", "GridSample", ("x", "g"), OUT,
                {"mode": mode, "padding_mode": padding, "align_corners": align}, {})


def _boxes(gen, batch: int, grid_radius: float):
    x_mid = torch.randn(batch, *DATA, generator=gen, dtype=F64)
    x_rad = 0.3 * torch.rand(batch, *DATA, generator=gen, dtype=F64)
    g_mid = 2.4 * torch.rand(batch, *GRID, generator=gen, dtype=F64) - 1.2
    g_rad = grid_radius * torch.rand(batch, *GRID, generator=gen, dtype=F64)
    return (Interval(x_mid - x_rad, x_mid + x_rad), Interval(g_mid - g_rad, g_mid + g_rad))


def _points(gen, box: Interval, count: int) -> torch.Tensor:
    u = torch.rand(count, *box.lower.shape, generator=gen, dtype=F64)
    u[: count // 4] = u[: count // 4].round()  # vertices
    return box.lower + u * (box.upper - box.lower)


@pytest.mark.parametrize("mode,padding,align", CASES)
@pytest.mark.parametrize("grid_radius", (0.0, 0.01, 0.2, 2.0))
def test_backward_step_holds_at_sampled_points(mode, padding, align, grid_radius):
    gen = torch.Generator().manual_seed(7)
    node = _node(mode, padding, align)
    batch, rows = 6, 5
    x, g = _boxes(gen, batch, grid_radius)
    coef = torch.randn(batch, rows, *OUT, generator=gen, dtype=F64)
    (data_coef, grid_coef), offset = RULE.backward(node, coef, [x, g])
    assert grid_coef is None and data_coef.shape == (batch, rows, *DATA)
    xs, gs = _points(gen, x, 64), _points(gen, g, 64)
    for xp, gp in zip(xs, gs, strict=True):
        y = RULE.forward(node, [xp, gp])  # [B, *OUT]
        value = (coef * y.unsqueeze(1)).flatten(2).sum(-1)
        bound = (data_coef * xp.unsqueeze(1)).flatten(2).sum(-1) + offset
        assert bool((value >= bound - 1e-9).all()), float((bound - value).max())


@pytest.mark.parametrize("mode,padding,align", CASES)
def test_point_grid_is_nearly_exact_inside_the_image(mode, padding, align):
    """A grid fixed at points inside the image: the step is the sampling's own linear map,
    so lower and upper bounds of a . y meet at every image point up to the margin for the
    runtime's float32 coordinates (64 u of their size: about 5e-5 pixel here, times 4 taps,
    |a| ~ 1 and 6 outputs), where the interval alone leaves the whole hull of the taps."""
    gen = torch.Generator().manual_seed(3)
    node = _node(mode, padding, align)
    x, _ = _boxes(gen, 4, 0.0)
    g_pt = torch.rand(4, *GRID, generator=gen, dtype=F64) - 0.5  # inside, both conventions
    g = Interval(g_pt, g_pt)
    coef = torch.randn(4, 3, *OUT, generator=gen, dtype=F64)
    (lo_c, _), lo_off = RULE.backward(node, coef, [x, g])
    (hi_c, _), hi_off = RULE.backward(node, -coef, [x, g])
    for xp in _points(gen, x, 16):
        low = (lo_c * xp.unsqueeze(1)).flatten(2).sum(-1) + lo_off
        high = -((hi_c * xp.unsqueeze(1)).flatten(2).sum(-1) + hi_off)
        assert float((high - low).max()) < 1e-2


def test_float32_pass_keeps_the_step_sound():
    """Coefficients in float32 (alpha passes): the weights' midpoints round, the radii
    absorb it."""
    gen = torch.Generator().manual_seed(11)
    node = _node("linear", "zeros", 0)
    x, g = _boxes(gen, 4, 0.0)
    x32, g32 = (Interval(b.lower.float(), b.upper.float()) for b in (x, g))
    coef = torch.randn(4, 3, *OUT, generator=gen, dtype=torch.float32)
    (data_coef, _), offset = RULE.backward(node, coef, [x32, g32])
    assert data_coef.dtype == torch.float32 and offset.dtype == torch.float32
    for xp in _points(gen, x, 16):
        y = RULE.forward(node, [xp, g.lower])
        value = (coef.double() * y.unsqueeze(1)).flatten(2).sum(-1)
        bound = (data_coef.double() * xp.unsqueeze(1)).flatten(2).sum(-1) + offset.double()
        assert bool((value >= bound - 1e-5).all())
