"""Softplus: f(x) = log(1 + exp(x)) (ONNX Softplus).

f'(x) = sigmoid(x) in (0, 1) and f''(x) = sigmoid(x) (1 - sigmoid(x)) > 0: f is increasing and
convex on the whole line. IBP: monotone, [f(l), f(u)] (plus a few float64 ulps outward).
Relaxation (``bounds.rules.tangents``): chord above, tangent at d below. Sound for any slope s:
the offsets are the exact extremes of f(x) - s x over l, u and the one root of f'(x) = s,
x = logit(s) = log(s) - log(1 - s) (NaN or infinite when s is outside (0, 1), where f - s x is
monotone and the endpoints suffice).
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l); midpoint by default.
Numerics: f(x) = max(x, 0) + log1p(exp(-|x|)) never overflows and loses no digits for x << 0
(f ~ exp(x)) or x >> 0 (f ~ x), in float32 and float64 (torch's softplus switches to x above
a threshold of 20, 2e-9 off: not float64-accurate).
Rounding: a library function with no error bound (Rounding.GENERIC, 2^-19 |y| + 2^-21);
onnxruntime 1.32's float32 kernel was measured within 2^-23 |y| + 5e-8 on [-1e4, 1e4].
Split: GenBaB interval splits at the midpoint (no lookup table); MILP: the relaxation planes.
"""

from __future__ import annotations

import torch

from bounds.registry import OpTraits, Split
from bounds.rules.tangents import Curve, curve_rule


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) without overflow or cancellation, in x's dtype."""
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


def _logit(s, l, u):
    return [torch.log(s) - torch.log1p(-s)]


def _convex(l, u):
    return torch.ones_like(l)


CURVE = Curve("Softplus", softplus, torch.sigmoid, _logit, _convex, increasing=True)

RULES = (
    curve_rule("Softplus", CURVE, softplus,
               OpTraits(monotone=True, convex=True, elementwise=True),
               "Softplus log(1 + exp(x)): convex; exact IBP, chord above, tangent below "
               "(alpha = tangent point in [0, 1])",
               split=Split("midpoint", "interval")),
)
