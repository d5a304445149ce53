"""Mish: x tanh(softplus(x)) (ONNX Mish, opset 18; YOLOv4-style CNNs). Imported as one node
and fused from x * Tanh(Softplus(x)) (``verifier.ir.passes.fuse_mish``): as a product of x
and its gate it was relaxed by McCormick planes that forget both move together.

A gated curve (``bounds.rules.gated``), convex on [c0, c1] (c0 ~ -2.2564, c1 ~ 1.4905, the
roots of f'') and concave outside; its minimum, near x = -1.1924, is f's only stationary
point. Float64 forms without cancellation or overflow, with t = tanh(softplus(x)) and
n = e^x (e^x + 2): t = n / (n + 2), 1 - t^2 = 4 (n + 1) / (n + 2)^2 for x < 0; in r = e^-x,
t = (1 + 2 r) / D and 1 - t^2 = 4 r^2 (1 + r)^2 / D^2, D = 1 + 2 r + 2 r^2, for x >= 0.
f' = t + x (1 - t^2) sigma(x); f'' = (1 - t^2) sigma(x) (2 + x (1 - sigma(x) (1 + 2 t))).

Rounding: onnxruntime's softplus and tanh to the generic allowance, then one product with x:
the generic allowance of |y| plus 2**-19 |x| (``Rounding.GENERIC_INPUT``), measured for the
op and the decomposition (tests/ir/test_fused_rounding.py).
"""

from __future__ import annotations

import torch

from bounds.registry import OpTraits, Rounding, TableGrid
from bounds.rules.common import table_split
from bounds.rules.gated import ERR_ULPS, gated_curve
from bounds.rules.tangents import curve_rule


def _gate(x):
    """(t, 1 - t^2) of x, t = tanh(softplus(x))."""
    neg = x < 0
    e = torch.exp(torch.where(neg, x, torch.zeros_like(x)))
    n = e * (e + 2)
    t_neg, sech_neg = n / (n + 2), 4 * (n + 1) / (n + 2) ** 2
    r = torch.exp(-torch.where(neg, torch.zeros_like(x), x))
    d = 1 + 2 * r + 2 * r * r
    t_pos, sech_pos = (1 + 2 * r) / d, 4 * (r * (1 + r) / d) ** 2
    return torch.where(neg, t_neg, t_pos), torch.where(neg, sech_neg, sech_pos)


def _f(x):
    return x * _gate(x)[0]


def _df_terms(x):
    """f''s two terms: t and x (1 - t^2) sigma(x)."""
    t, sech = _gate(x)
    return t, x * sech * torch.sigmoid(x)


def _df_err(x):
    """f'(x) and a bound on its float64 error: 16 ulps of both terms' magnitudes, the second
    also times 1 + |x| (its factors' exponentials)."""
    t, bump = _df_terms(x)
    return t + bump, ERR_ULPS * (t.abs() + bump.abs() * (2 + x.abs()))


def _df(x):
    t, bump = _df_terms(x)
    return t + bump


def _ddf_factor(x, t=None):
    if t is None:
        t = _gate(x)[0]
    sg = torch.sigmoid(x)
    return 2 + x * (1 - sg * (1 + 2 * t))


def _ddf(x):
    t, sech = _gate(x)
    return sech * torch.sigmoid(x) * _ddf_factor(x, t)


def _root(a: float, b: float) -> float:
    """The root of f'' in [a, b], where it changes sign once."""
    sign_a = float(_ddf_factor(torch.tensor(a, dtype=torch.float64))) > 0
    for _ in range(80):
        m = (a + b) / 2
        if (float(_ddf_factor(torch.tensor(m, dtype=torch.float64))) > 0) == sign_a:
            a = m
        else:
            b = m
    return (a + b) / 2


INFLECTIONS = (_root(-4.0, 0.0), _root(0.0, 4.0))
CURVE = gated_curve("Mish", _f, _df, _df_err, _ddf, INFLECTIONS)


RULES = (
    curve_rule("Mish", CURVE, _f, OpTraits(elementwise=True),
               "Mish x tanh(softplus(x)): exact IBP, chord/tangent planes",
               rounding=Rounding.GENERIC_INPUT, split=table_split(TableGrid("Mish"))),
)
