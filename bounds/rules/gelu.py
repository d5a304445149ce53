"""GELU: x Phi(x) (approximate="none", Phi the normal CDF) or the tanh form
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (approximate="tanh").

Both are gated curves (``bounds.rules.gated``): convex on [-c, c] and concave outside (c =
sqrt 2 for the exact form, f'' = phi(x) (2 - x^2); c is found numerically for the tanh form).
IBP: exact range; the minimum (near x = -0.7518) is the root of f' = 0 on the middle piece.
Relaxation: chord/tangent where the curvature has one sign on [l, u], else two planes parallel
to the chord. Sound for any slope s: offsets are the exact extremes of f(x) - s x over l, u and
the roots of f' = s on each piece.
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l), as for the other smooth ops.
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, TableGrid
from bounds.rules.common import TANGENT_ALPHA, table_split
from bounds.rules.gated import ERR_ULPS, gated_curve, sigmoid_gate_df, sigmoid_gate_df_err
from bounds.rules.tangents import ibp_curve, relax_curve

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = math.sqrt(2.0 / math.pi)
_C3 = 0.044715


def _erf_f(x):
    # x Phi(x) with Phi = erfc(-x / sqrt 2) / 2: no cancellation for x << 0 (1 + erf would lose
    # every digit there)
    return x * 0.5 * torch.special.erfc(-x * _INV_SQRT2)


def _erf_terms(x):
    """f' of the erf form as its two terms: Phi(x) and x phi(x)."""
    tail = 0.5 * torch.special.erfc(-x * _INV_SQRT2)
    return tail, x * _INV_SQRT2PI * torch.exp(-0.5 * x * x)


def _erf_df(x):
    tail, bump = _erf_terms(x)
    return tail + bump


def _tanh_arg(x):
    return _K * (x + _C3 * x**3)


def _tanh_f(x):
    # 0.5 x (1 + tanh(v)) = x sigmoid(2 v), accurate for x << 0
    return x * torch.sigmoid(2 * _tanh_arg(x))


def _tanh_gate(x):
    """The tanh form as x sigmoid(z): z = 2 v(x) and x z'(x)."""
    return 2 * _tanh_arg(x), 2 * x * _K * (1 + 3 * _C3 * x * x)


def _tanh_df_err(x):
    return sigmoid_gate_df_err(*_tanh_gate(x))


def _tanh_df(x):
    return sigmoid_gate_df(*_tanh_gate(x))


def _tanh_ddf(x):
    """f'' of the tanh form, with 1 - tanh(v)^2 = 4 sigma(2 v) sigma(-2 v) and tanh(v) =
    sigma(2 v) - sigma(-2 v) (1 - t^2 from t = tanh(v) is 0 once |v| > 19: Newton's steps
    would divide by it)."""
    z = 2 * _tanh_arg(x)
    hi, lo = torch.sigmoid(z), torch.sigmoid(-z)
    t = hi - lo
    du, ddu = _K * (1 + 3 * _C3 * x * x), 6 * _K * _C3 * x
    return 4 * hi * lo * (du + 0.5 * x * ddu - x * t * du * du)


def _inflection_tanh() -> float:
    """The positive root of f'' for the tanh form (f'' is even; it is > 0 at 1, < 0 at 2)."""
    a, b = 1.0, 2.0
    for _ in range(80):
        m = (a + b) / 2
        a, b = (m, b) if float(_tanh_ddf(torch.tensor(m, dtype=torch.float64))) > 0 else (a, m)
    return (a + b) / 2


def _erf_df_err(x):
    """f'(x) of the erf form and a bound on its float64 error at x: 16 ulps of its terms'
    magnitudes and of their sensitivity to x's own rounding (|x| |d/dx| of erfc(-x / sqrt 2)
    and of x exp(-x^2 / 2): |x| phi(x) (2 + x^2))."""
    tail, bump = _erf_terms(x)
    return tail + bump, ERR_ULPS * (tail + bump.abs() + bump.abs() * (2 + x * x))


def _erf_ddf(x):
    return _INV_SQRT2PI * torch.exp(-0.5 * x * x) * (2 - x * x)


CURVES = {
    "none": gated_curve("Gelu", _erf_f, _erf_df, _erf_df_err, _erf_ddf, math.sqrt(2.0)),
    "tanh": gated_curve("Gelu(tanh)", _tanh_f, _tanh_df, _tanh_df_err, _tanh_ddf,
                        _inflection_tanh()),
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
