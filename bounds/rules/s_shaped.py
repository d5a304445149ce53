"""S-shaped activations: Sigmoid, Tanh, Atan, Erf.

Each is increasing, convex on x <= 0 and concave on x >= 0, with an even derivative that peaks
at 0. IBP: monotone, [f(l), f(u)] (plus a few float64 ulps outward).
Relaxation (see ``bounds.rules.tangents``): u <= 0: chord above, tangent below; l >= 0: tangent
above, chord below; l < 0 < u: upper line through (l, f(l)) tangent to the concave part, lower
line through (u, f(u)) tangent to the convex part (chords when the tangent point leaves [l, u]).
Sound for any slope because offsets are the exact extremes of f(x) - s x, found at l, u or
+-r(s), the two points where f'(x) = s (inverted in closed form below).
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l); tangent-type planes get slope
f'(d) (both planes when l < 0 < u), chord planes are unchanged.
"""

from __future__ import annotations

import math

import torch

from bounds.registry import OpRule, OpTraits, TableGrid
from bounds.rules.common import table_split
from bounds.rules.tangents import (
    Curve,
    curve_rule,
    even_crit,
    sshape_crossing,
    sshape_curvature,
)

_TRAITS = OpTraits(monotone=True, elementwise=True)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _sigmoid_r(s):
    # sigma(-r) = q with q (1 - q) = s; stable root q = 2 s / (1 + sqrt(1 - 4 s))
    q = 2 * s / (1 + torch.sqrt(1 - 4 * s))
    return torch.log1p(-q) - torch.log(q)


def _tanh_r(s):
    # 1 - tanh(r)^2 = s: r = atanh(t), t = sqrt(1 - s); atanh(t) = log(1 + t) - log(s) / 2
    t = torch.sqrt(1 - s)
    return torch.log1p(t) - 0.5 * torch.log(s)


def _atan_r(s):
    return torch.sqrt((1 - s) / s)


def _erf_r(s):
    return torch.sqrt(torch.log(_TWO_OVER_SQRT_PI / s))


def _dsigmoid(x):
    y = torch.sigmoid(x)
    return y * (1 - y)


def _curve(name, f, df, r) -> Curve:
    curve = Curve(name, f, df, even_crit(r), sshape_curvature)
    return Curve(name, f, df, even_crit(r), sshape_curvature, crossing=sshape_crossing(curve))


CURVES = {
    "Sigmoid": _curve("Sigmoid", torch.sigmoid, _dsigmoid, _sigmoid_r),
    "Tanh": _curve("Tanh", torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, _tanh_r),
    "Atan": _curve("Atan", torch.atan, lambda x: 1 / (1 + x * x), _atan_r),
    "Erf": _curve("Erf", torch.erf, lambda x: _TWO_OVER_SQRT_PI * torch.exp(-x * x), _erf_r),
}
_FORWARD = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Atan": torch.atan, "Erf": torch.erf}


def _rule(op: str) -> OpRule:
    return curve_rule(op, CURVES[op], _FORWARD[op], _TRAITS,
                      f"{op}: S-shaped; tangent/chord relaxation, alpha = tangent point in [0, 1]",
                      split=table_split(TableGrid(op)))


RULES = tuple(_rule(op) for op in ("Sigmoid", "Tanh", "Atan", "Erf"))
