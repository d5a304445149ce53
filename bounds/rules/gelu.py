"""GELU: x Phi(x) (approximate="none", Phi the normal CDF) or the tanh form
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (approximate="tanh").

Both are convex on [-c, c] and concave outside (c = sqrt 2 for the exact form, f'' = phi(x)
(2 - x^2); c is found numerically for the tanh form), so f' decreases, increases, decreases on
the three pieces. IBP: exact range; the minimum (near x = -0.7518) is the root of f' = 0 on
the middle piece, found by bisection. Relaxation: chord/tangent where the curvature has one
sign on [l, u], else two planes parallel to the chord. Sound for any slope s: offsets are the
exact extremes of f(x) - s x over l, u and the (bisected) roots of f' = s on each piece.
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l), as for the other smooth ops.
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, TableGrid
from bounds.rules.common import TANGENT_ALPHA, table_split
from bounds.rules.tangents import Curve, bisect, ibp_curve, relax_curve

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = math.sqrt(2.0 / math.pi)
_C3 = 0.044715


def _erf_f(x):
    # x Phi(x) with Phi = erfc(-x / sqrt 2) / 2: no cancellation for x << 0 (1 + erf would lose
    # every digit there)
    return x * 0.5 * torch.special.erfc(-x * _INV_SQRT2)


def _erf_df(x):
    return 0.5 * torch.special.erfc(-x * _INV_SQRT2) + x * _INV_SQRT2PI * torch.exp(-0.5 * x * x)


def _tanh_arg(x):
    return _K * (x + _C3 * x**3)


def _tanh_f(x):
    # 0.5 x (1 + tanh(v)) = x sigmoid(2 v), accurate for x << 0
    return x * torch.sigmoid(2 * _tanh_arg(x))


def _tanh_df(x):
    sg = torch.sigmoid(2 * _tanh_arg(x))
    return sg + 2 * x * sg * (1 - sg) * _K * (1 + 3 * _C3 * x * x)


def _tanh_ddf(x: float) -> float:
    t = math.tanh(_K * (x + _C3 * x**3))
    du, ddu = _K * (1 + 3 * _C3 * x * x), 6 * _K * _C3 * x
    return (1 - t * t) * (du + 0.5 * x * ddu - x * t * du * du)


def _inflection_tanh() -> float:
    """The positive root of f'' for the tanh form (f'' is even; it is > 0 at 1, < 0 at 2)."""
    a, b = 1.0, 2.0
    for _ in range(80):
        m = (a + b) / 2
        a, b = (m, b) if _tanh_ddf(m) > 0 else (a, m)
    return (a + b) / 2


def _make(name: str, f, df, c: float) -> Curve:
    def crit(s, l, u):
        pieces = ((-math.inf, -c, False), (-c, c, True), (c, math.inf, False))
        out = []
        for p0, p1, inc in pieces:
            a = l.clamp(min=p0).clamp(max=u).clamp(max=p1) if math.isfinite(p1) else l.clamp(min=p0)
            b = u.clamp(max=p1).clamp(min=l).clamp(min=p0) if math.isfinite(p0) else u.clamp(max=p1)
            a, b = torch.minimum(a, b), torch.maximum(a, b)
            out.append(bisect(df, s, a, b, inc, iters=64))
        return out

    def curvature(l, u):
        one = torch.ones_like(l)
        convex = (l >= -c) & (u <= c)
        concave = (u <= -c) | (l >= c)
        return torch.where(convex, one, torch.where(concave, -one, 0 * one))

    return Curve(name, f, df, crit, curvature)


CURVES = {
    "none": _make("Gelu", _erf_f, _erf_df, math.sqrt(2.0)),
    "tanh": _make("Gelu(tanh)", _tanh_f, _tanh_df, _inflection_tanh()),
}


def _mode(node) -> str:
    mode = str(node.attrs.get("approximate", "none"))
    if mode not in CURVES:
        raise ValueError(f"Gelu node {node.name}: unknown approximate={mode!r}")
    return mode


def _forward(node, args):
    # the same cancellation-free forms as the relaxation (torch's gelu loses digits for x << 0)
    f = _erf_f if _mode(node) == "none" else _tanh_f
    return f(args[0])


def _ibp(node, args):
    return ibp_curve(CURVES[_mode(node)], "Gelu", args[0])


def _relax(node, lower, upper, alpha=None):
    return relax_curve(CURVES[_mode(node)], "Gelu", lower, upper, alpha)


def _table_key(attrs) -> str:
    return "Gelu:tanh" if str(attrs.get("approximate", "none")) == "tanh" else "Gelu"


RULES = (
    OpRule("Gelu", forward=_forward, ibp=_ibp, relax=_relax,
           traits=OpTraits(elementwise=True),
           # onnxruntime's float32 tanh form was measured off by ~eps32 |x| at x = -4.4
           alpha=TANGENT_ALPHA, rounding=Rounding.GENERIC_INPUT, milp=Milp("relaxed"),
           split=table_split(TableGrid("Gelu", (("approximate", "none"),)),
                             TableGrid("Gelu:tanh", (("approximate", "tanh"),)),
                             key_of=_table_key),
           doc="GELU (erf or tanh form): exact IBP, chord/tangent planes"),
)
