"""Swish: x sigmoid(alpha x) (ONNX Swish, opset 24; SiLU at alpha = 1, QuickGelu at 1.702),
alpha > 0. The importer fuses Mul(x, Sigmoid(x)) and Mul(x, Sigmoid(alpha x)) into it
(``verifier.ir.passes.fuse_swish``): as a product of two operands it was relaxed by McCormick
planes that forget both are the same x, loose and a bilinear backward step at each.

A gated curve (``bounds.rules.gated``): with z = alpha x, f(x) = g(z) / alpha, g(z) = z
sigma(z), g'' = sigma(z) sigma(-z) (2 + z (sigma(-z) - sigma(z))), which is positive on
(-t, t), t ~ 2.3994 the root of t tanh(t / 2) = 2, and negative outside; so c = t / alpha. The
minimum, near z = -1.2785, is f's only stationary point.

Rounding: onnxruntime computes sigma(fl(alpha x)) to the generic allowance, then one product
with x: |x| times the gate's error, plus u |y|, plus the shift of fl(alpha x)'s rounding
(sigma' |z| u <= 0.23 u, times |x|): within the generic allowance of |y| plus 2**-19 |x|
(``Rounding.GENERIC_INPUT``, as Gelu).
"""

from __future__ import annotations

import functools
import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, TableGrid
from bounds.rules.common import TANGENT_ALPHA, table_split
from bounds.rules.gated import gated_curve, sigmoid_gate_df, sigmoid_gate_df_err
from bounds.rules.tangents import Curve, ibp_curve, relax_curve


def _g_ddf_factor(z):
    """2 + z (sigma(-z) - sigma(z)): the sign of g''(z)."""
    return 2 + z * (torch.sigmoid(-z) - torch.sigmoid(z))


def _inflection() -> float:
    """t > 0 with g''(t) = 0 (the factor is 2 at 0 and decreasing for t > 0; < 0 at 3)."""
    a, b = 0.0, 3.0
    for _ in range(80):
        m = (a + b) / 2
        if float(_g_ddf_factor(torch.tensor(m, dtype=torch.float64))) > 0:
            a = m
        else:
            b = m
    return (a + b) / 2


INFLECTION = _inflection()


@functools.lru_cache(maxsize=32)
def curve(alpha: float) -> Curve:
    """The curve of x sigmoid(alpha x), alpha > 0."""
    a = float(alpha)

    def f(x):
        return x * torch.sigmoid(a * x)

    def df_err(x):
        return sigmoid_gate_df_err(a * x, a * x)

    def df(x):
        return sigmoid_gate_df(a * x, a * x)

    def ddf(x):
        z = a * x
        return a * torch.sigmoid(z) * torch.sigmoid(-z) * _g_ddf_factor(z)

    return gated_curve(f"Swish(alpha={a:g})", f, df, df_err, ddf, INFLECTION / a)


def swish_alpha(node) -> float:
    alpha = float(node.attrs.get("alpha", 1.0))
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"Swish node {node.name}: alpha={alpha!r} must be positive")
    return alpha


def _forward(node, args):
    return curve(swish_alpha(node)).f(args[0])


def _ibp(node, args):
    return ibp_curve(curve(swish_alpha(node)), f"Swish node {node.name!r}", args[0])


def _relax(node, lower, upper, alpha=None):
    return relax_curve(curve(swish_alpha(node)), f"Swish node {node.name!r}", lower, upper,
                       alpha)


def _input_scale(attrs) -> float:
    # x sigmoid(a x) = g(a x) / a, g SiLU: SiLU's table read at a-scaled ends
    return float(attrs.get("alpha", 1.0))


RULES = (
    OpRule("Swish", forward=_forward, ibp=_ibp, relax=_relax,
           traits=OpTraits(elementwise=True),
           alpha=TANGENT_ALPHA, rounding=Rounding.GENERIC_INPUT, milp=Milp("relaxed"),
           split=table_split(TableGrid("Swish", (("alpha", 1.0),)), scale_of=_input_scale),
           doc="Swish / SiLU x sigmoid(alpha x): exact IBP, chord/tangent planes"),
)
