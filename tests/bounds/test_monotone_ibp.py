"""IBP of curves marked ``increasing`` (``tangents.ibp_curve``'s [f(l), f(u)] shortcut): the
same intervals as the general form (extremes over the ends and critical points of f), and
they enclose f at sampled points. An undefined f at an infinite end (NaN) widens IBP to
the whole line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bounds.rules.exp_log import EXP, LOG, SQRT
from bounds.rules.gelu import CURVES as GELU
from bounds.rules.periodic import CURVES as PERIODIC
from bounds.rules.s_shaped import CURVES
from bounds.rules.softplus import CURVE as SOFTPLUS
from bounds.rules.tangents import ibp_curve
from bounds.types import Interval

F64 = torch.float64
INCREASING = {**CURVES, "Exp": EXP, "Softplus": SOFTPLUS, "Log": LOG, "Sqrt": SQRT}


def _box(name: str, n: int = 3000) -> Interval:
    rng = np.random.default_rng(4)
    centre = rng.normal(size=n) * rng.choice([0.1, 3.0, 30.0], size=n)
    width = rng.random(n) * rng.choice([0.0, 1e-6, 1.0, 50.0], size=n)
    lo, hi = centre - width, centre + width
    if name in ("Log", "Sqrt"):  # (their domains)
        lo, hi = np.abs(lo) + 1e-3, np.abs(lo) + 1e-3 + 2 * width
    if name == "Exp":  # (no overflow to infinity)
        lo, hi = np.minimum(lo, 300.0), np.minimum(hi, 300.0)
    return Interval(torch.as_tensor(lo, dtype=F64), torch.as_tensor(hi, dtype=F64))


@pytest.mark.parametrize("name", sorted(INCREASING))
def test_increasing_ibp_equals_the_general_form(name):
    curve = INCREASING[name]
    assert curve.increasing
    box = _box(name)
    fast = ibp_curve(curve, name, box)
    general = ibp_curve(dataclasses.replace(curve, increasing=False), name, box)
    assert torch.equal(fast.lower, general.lower) and torch.equal(fast.upper, general.upper)
    rng = np.random.default_rng(5)
    frac = torch.as_tensor(rng.random((box.lower.numel(), 64)), dtype=F64)
    x = box.lower.unsqueeze(1) + frac * (box.upper - box.lower).unsqueeze(1)
    y = curve.f(torch.minimum(torch.maximum(x, box.lower.unsqueeze(1)), box.upper.unsqueeze(1)))
    assert bool((y >= fast.lower.unsqueeze(1)).all()) and bool((y <= fast.upper.unsqueeze(1)).all())


@pytest.mark.parametrize("op", ["Gelu", "Sin", "Cos"])
def test_undefined_value_at_an_infinite_end_gives_the_widest_interval(op):
    # f(-inf) or f(inf) is NaN for these (x Phi(x) at -inf, sin(inf)): IBP answers the widest
    # interval, never NaN, which later comparisons would read as false
    curve = GELU["none"] if op == "Gelu" else PERIODIC[op]
    box = Interval(torch.tensor([-np.inf, -2.0, 1.0], dtype=F64),
                   torch.tensor([3.0, np.inf, 2.0], dtype=F64))
    out = ibp_curve(curve, op, box)
    assert not bool(torch.isnan(out.lower).any() | torch.isnan(out.upper).any())
    assert float(out.lower[0]) == -np.inf and float(out.upper[1]) == np.inf
    x = torch.tensor([1.0, 1.5, 2.0], dtype=F64)
    assert bool(((curve.f(x) >= out.lower[2]) & (curve.f(x) <= out.upper[2])).all())
