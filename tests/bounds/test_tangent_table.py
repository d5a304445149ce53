"""The S-shaped curves' crossing slopes from the tabulated tangent points
(``tangents.TangentTable``): the points solve the tangency condition, the slopes match a
bisection reference to the table's interpolation error, and the default planes enclose the
curve at sampled points, ends far past the table included (an infinite end stays a
DomainError, as before the table)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch

from bounds.rules.s_shaped import CURVES
from bounds.rules.tangents import (
    TABLE_SPAN,
    DomainError,
    TangentTable,
    bisect,
    chord_slope,
    relax_curve,
)

F64 = torch.float64
OPS = ("Sigmoid", "Tanh", "Atan", "Erf")
REFERENCE = {"Sigmoid": scipy.special.expit, "Tanh": np.tanh, "Atan": np.arctan,
             "Erf": scipy.special.erf}


def _reference_slopes(op: str, l: torch.Tensor, u: torch.Tensor):
    """The crossing slopes by a 100-step bisection of the tangency condition on [0, u] and
    [l, 0] (the form the table replaced)."""
    curve = CURVES[op]
    f, df = curve.f, curve.df
    fl, fu = f(l), f(u)
    zero = torch.zeros_like(l)
    d_up = bisect(lambda d: f(d) + df(d) * (l - d) - fl, zero, zero, u, True, 100)
    d_lo = bisect(lambda d: f(d) + df(d) * (u - d) - fu, zero, l, zero, True, 100)
    chord = chord_slope(curve, l, u)
    up_chord = f(u) + df(u) * (l - u) - fl <= 0
    lo_chord = f(l) + df(l) * (u - l) - fu >= 0
    return torch.where(lo_chord, chord, df(d_lo)), torch.where(up_chord, chord, df(d_up))


def _crossing(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    l = -np.exp(rng.uniform(-12, 8, size=n))
    u = np.exp(rng.uniform(-12, 8, size=n))
    return torch.as_tensor(l, dtype=F64), torch.as_tensor(u, dtype=F64)


@pytest.mark.parametrize("op", OPS)
def test_table_points_solve_the_tangency(op):
    curve = CURVES[op]
    table = TangentTable(curve)
    e = -torch.as_tensor(np.exp(np.linspace(-10, np.log(np.sinh(TABLE_SPAN)), 500)), dtype=F64)
    d = table.point(e)
    assert bool((d >= 0).all()) and bool((d <= -e * (1 + 1e-12)).all())
    # g(d) = f(d) + f'(d) (e - d) - f(e): zero up to g' times the interpolation error
    g = curve.f(d) + curve.df(d) * (e - d) - curve.f(e)
    scale = curve.df(torch.zeros(1, dtype=F64)) * (d - e)
    assert float((g.abs() / scale).max()) < 1e-6


@pytest.mark.parametrize("op", OPS)
def test_crossing_slopes_match_bisection(op):
    l, u = _crossing(3)
    lo, up = CURVES[op].crossing(l, u)
    ref_lo, ref_up = _reference_slopes(op, l, u)
    for got, ref in ((lo, ref_lo), (up, ref_up)):
        rel = (got - ref).abs() / ref.abs().clamp(min=1e-300)
        assert float(rel.max()) < 1e-5


@pytest.mark.parametrize("op", OPS)
def test_default_planes_enclose_the_curve(op):
    l, u = _crossing(5, 600)
    # ends past the table
    l = torch.cat([l, torch.tensor([-3e4, -1e6, -2.0], dtype=F64)])
    u = torch.cat([u, torch.tensor([1e5, 0.5, 2e7], dtype=F64)])
    rel = relax_curve(CURVES[op], op, l, u)
    planes = [t.to(F64) for t in (rel.lower_slope, rel.lower_offset, rel.upper_slope,
                                  rel.upper_offset)]
    for t in planes:
        assert bool(torch.isfinite(t).all())
    rng = np.random.default_rng(11)
    frac = torch.as_tensor(rng.random((l.numel(), 200)), dtype=F64)
    lf, uf = l.unsqueeze(1), u.unsqueeze(1)
    x = torch.cat([lf + frac * (uf - lf), lf, uf, torch.zeros_like(lf)], dim=1)
    x = torch.minimum(torch.maximum(x, lf), uf)
    y = torch.as_tensor(REFERENCE[op](x.numpy()), dtype=F64)
    lower = planes[0].unsqueeze(1) * x + planes[1].unsqueeze(1)
    upper = planes[2].unsqueeze(1) * x + planes[3].unsqueeze(1)
    slack = 4 * torch.finfo(F64).eps * (y.abs() + (planes[0].abs().unsqueeze(1)
                                                   + planes[2].abs().unsqueeze(1)) * x.abs()
                                         + planes[1].abs().unsqueeze(1)
                                         + planes[3].abs().unsqueeze(1))
    assert bool((lower <= y + slack).all())
    assert bool((upper >= y - slack).all())


@pytest.mark.parametrize("op", OPS)
def test_infinite_end_is_a_domain_error(op):
    with pytest.raises(DomainError):
        relax_curve(CURVES[op], op, torch.tensor([-np.inf], dtype=F64),
                    torch.tensor([3.0], dtype=F64))


def test_nan_end_gives_a_finite_point():
    table = TangentTable(CURVES["Sigmoid"])
    d = table.point(torch.tensor([float("nan"), -float("inf"), 1.0], dtype=F64))
    assert bool(torch.isfinite(d).all())
