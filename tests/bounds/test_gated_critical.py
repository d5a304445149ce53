"""Critical points of g = f - s x of the gated curves, GELU (both forms), Swish (two alphas)
and Mish (``gated.SlopeInverse``: a table start, Newton steps, a proven slack): the points
match a bisection reference, the slack is negligible where the root is bracketed, the extremes
enclose densely sampled g (near the inflections, the minimum and far out), and
``tangents.extreme`` widens by a ``Critical``'s slack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.rules import mish, swish
from bounds.rules.gelu import CURVES as GELU
from bounds.rules.tangents import (
    Critical,
    Curve,
    DomainError,
    bisect,
    extreme,
    ibp_curve,
    relax_curve,
)
from bounds.types import Interval

F64 = torch.float64
CURVES = {"none": GELU["none"], "tanh": GELU["tanh"], "silu": swish.curve(1.0),
          "swish(1.702)": swish.curve(1.702), "mish": mish.CURVE}
FORMS = tuple(CURVES)


def _inflections(form: str) -> tuple[float, float]:
    curve = CURVES[form]
    # f' is lowest at c0 < 0 and peaks at c1 > 0 (by a fine grid: +-sqrt 2 for the erf form)
    x = torch.linspace(-4.0, 0.0, 400001, dtype=F64)
    y = torch.linspace(0.0, 4.0, 400001, dtype=F64)
    return float(x[curve.df(x).argmin()]), float(y[curve.df(y).argmax()])


def _minimum(form: str) -> tuple[float, float]:
    """f's minimum (its only stationary point) and where, by a fine grid."""
    x = torch.linspace(-3.0, 0.0, 300001, dtype=F64)
    y = CURVES[form].f(x)
    return float(y.min()), float(x[y.argmin()])


def _cases(seed: int, form: str, n: int = 3000):
    """Slopes across f's range and beyond, on intervals of every kind."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=n) * rng.choice([0.3, 1.5, 4.0, 30.0], size=n)
    width = rng.choice([1e-6, 0.1, 1.0, 5.0, 60.0], size=n) * rng.random(n)
    s, l, u = (torch.as_tensor(v, dtype=F64) for v in (
        rng.uniform(-0.3, 1.3, size=n), centre - width, centre + width))
    # half of them: f' at a point of [l, u] (a root there, in some piece)
    inside = torch.as_tensor(rng.random(n) < 0.5)
    at = l + torch.as_tensor(rng.random(n), dtype=F64) * (u - l)
    return torch.where(inside, CURVES[form].df(at), s), l, u


def _reference_points(form: str, s, l, u) -> list:
    """Roots of f' = s on each piece by 200 bisection steps (the form before the table)."""
    curve, (c0, c1) = CURVES[form], _inflections(form)
    out = []
    for p0, p1, inc in ((-math.inf, c0, False), (c0, c1, True), (c1, math.inf, False)):
        a = l.clamp(min=p0).clamp(max=u).clamp(max=p1)
        b = u.clamp(max=p1).clamp(min=l).clamp(min=p0)
        a, b = torch.minimum(a, b), torch.maximum(a, b)
        out.append(bisect(curve.df, s, a, b, inc, iters=200))
    return out


@pytest.mark.parametrize("form", FORMS)
def test_points_match_bisection_and_slack_is_negligible(form):
    s, l, u = _cases(1, form)
    found = CURVES[form].crit(s, l, u)
    assert isinstance(found, Critical)
    ref = _reference_points(form, s, l, u)
    curve = CURVES[form]
    for got, want in zip(found.points, ref, strict=True):
        # where the reference found a clear root (f' - s changes sign around it): g there is
        # g at the reference point (where f' is flat the root itself is ill-determined, g
        # is not), and the point itself is close wherever f'' is not tiny
        step = 1e-7 * (1 + want.abs())
        clear = (((curve.df(want - step) - s) * (curve.df(want + step) - s) < 0)
                 & (want > l) & (want < u))
        assert int(clear.sum()) > 40
        g_got, g_want = (curve.f(x) - s * x for x in (got, want))
        assert float(((g_got - g_want).abs() / (1 + g_want.abs()))[clear].max()) < 1e-12
        steep = clear & (curve.df(want + 1e-3) - curve.df(want - 1e-3)).abs().gt(1e-4)
        if bool(steep.any()):  # (Swish's and Mish's far piece: f' flat where roots are)
            assert float(((got - want).abs() / (1 + want.abs()))[steep].max()) < 1e-6
    # (where f' is flat to the last bits on a wide [l, u] no local bracket shows: the whole
    # piece's width is the bound, still far below the planes' own rounding margins)
    assert float((found.slack / (1 + torch.maximum(l.abs(), u.abs()))).max()) < 1e-13
    assert float(found.slack.median()) < 1e-18


def _dense_extremes(form: str, s, l, u, k: int = 20001):
    x = l.unsqueeze(1) + torch.linspace(0.0, 1.0, k, dtype=F64) * (u - l).unsqueeze(1)
    g = CURVES[form].f(x) - s.unsqueeze(1) * x
    return g.amin(1), g.amax(1)


@pytest.mark.parametrize("form", FORMS)
def test_extremes_enclose_sampled_g(form):
    c0, c1 = _inflections(form)
    rng = np.random.default_rng(2)
    n = 400
    # around the inflections, around the minimum (f' = 0: -0.75 for GELU), and random
    centre = np.concatenate([rng.choice([c0, c1, _minimum(form)[1]], size=n // 2)
                             + rng.normal(size=n // 2) * 0.01, rng.normal(size=n // 2) * 3])
    width = rng.choice([1e-4, 0.05, 0.5, 3.0], size=n) * rng.random(n)
    l = torch.as_tensor(centre - width, dtype=F64)
    u = torch.as_tensor(centre + width, dtype=F64)
    curve = CURVES[form]
    s = torch.as_tensor(rng.uniform(-0.2, 1.2, size=n), dtype=F64)
    # the slopes alpha and the chords use: f' at points of [l, u]
    s = torch.where(torch.as_tensor(rng.random(n) < 0.5),
                    curve.df(l + torch.as_tensor(rng.random(n), dtype=F64) * (u - l)), s)
    lo = extreme(curve, s, l, u, largest=False)
    hi = extreme(curve, s, l, u, largest=True)
    g_lo, g_hi = _dense_extremes(form, s, l, u)
    slack = 8 * torch.finfo(F64).eps * (g_lo.abs() + g_hi.abs() + s.abs() * u.abs().maximum(
        l.abs()))
    assert bool((lo <= g_lo + slack).all())
    assert bool((hi >= g_hi - slack).all())
    # and tight: within the dense grid's own resolution of the true extremes
    assert float((g_lo - lo).max()) < 1e-6
    assert float((hi - g_hi).max()) < 1e-6


def test_extreme_widens_by_the_slack():
    # a Critical whose point misses the true maximiser (0 for f = -x^2, s = 0) by 0.1
    curve = Curve("parabola", lambda x: -x * x, lambda x: -2 * x,
                  lambda s, l, u: Critical([torch.full_like(l, 0.1)], torch.full_like(l, 0.5)),
                  lambda l, u: -torch.ones_like(l))
    l, u = torch.tensor([-1.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    hi = extreme(curve, torch.zeros_like(l), l, u, largest=True)
    lo = extreme(curve, torch.zeros_like(l), l, u, largest=False)
    assert float(hi) == pytest.approx(-0.01 + 0.5)
    assert float(lo) == pytest.approx(-1.0 - 0.5)


@pytest.mark.parametrize("form", FORMS)
def test_infinite_ends(form):
    curve = CURVES[form]
    # an infinite upper end: IBP still finds the minimum
    box = ibp_curve(curve, form, Interval(torch.tensor([-3.0], dtype=F64),
                                          torch.tensor([math.inf], dtype=F64)))
    low = _minimum(form)[0]
    assert low - 1e-6 < float(box.lower) <= low and float(box.upper) == math.inf
    with pytest.raises(DomainError):
        relax_curve(curve, form, torch.tensor([-3.0], dtype=F64),
                    torch.tensor([math.inf], dtype=F64))
