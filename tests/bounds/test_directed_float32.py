"""Directed rounding to float32 (``rounding.float32_below`` / ``float32_above``): the result is
a float32 value on the right side of its input and the nearest one there."""

from __future__ import annotations

import math

import pytest
import torch

from bounds.engine.rounding import float32_above, float32_below

MAX32 = torch.finfo(torch.float32).max
EDGES = [0.0, -0.0, 1e-300, -1e-300, 1e-46, -1e-46, 1.0 + 1e-12, -(1.0 + 1e-12), 16777217.5,
         1e10 + 1.0, 3.5e38, -3.5e38, 1e300, -1e300, math.inf, -math.inf]


def samples() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    scale = 10.0 ** torch.randint(-60, 60, (2000,), generator=gen).double()
    return torch.cat([torch.tensor(EDGES, dtype=torch.float64),
                      torch.randn(2000, generator=gen, dtype=torch.float64) * scale])


@pytest.mark.parametrize("direction", ["below", "above"])
def test_nearest_float32_on_the_side_asked(direction):
    x = samples()
    sign = 1.0 if direction == "below" else -1.0
    got = (float32_below if direction == "below" else float32_above)(x)
    assert got.dtype == torch.float32
    wide = got.double()
    assert bool((sign * wide <= sign * x).all())
    # x itself where float32 holds it; else the next float32 towards x is past it; an
    # infinity only for x beyond float32's range
    towards = torch.nextafter(got, torch.full_like(got, sign * math.inf)).double()
    inf = torch.isinf(got) & (got == -sign * math.inf)
    assert bool(torch.where(inf, sign * x < -MAX32,
                            (wide == x) | (sign * towards > sign * x)).all())


def test_float32_values_stay_as_they_are():
    x = samples().float()
    assert torch.equal(float32_below(x), x) and torch.equal(float32_above(x), x)
    assert torch.equal(float32_below(x.double()), x) and torch.equal(float32_above(x.double()), x)
