"""HardSwish: x clip(alpha x + beta, 0, 1), alpha > 0 (ONNX HardSwish: alpha 1/6, beta 1/2;
MobileNetV3, LeViT). Imported as one node, and fused from x * HardSigmoid(x) and
x * Clip(x + 3, 0, 6) / 6 (``verifier.ir.passes.fuse_hard_swish``): as a product of x and its
gate it was relaxed by McCormick planes that forget both move together.

With p0 = -beta / alpha (the gate closes) and p1 = (1 - beta) / alpha (it saturates), f is 0
below p0, the convex parabola alpha x^2 + beta x between, and x above p1; the slope drops at
both kinks (by beta at p0, by 1 - beta at p1, for beta in [0, 1]). Described as a
``tangents.Curve``: the critical points of g = f - s x are the parabola's stationary point
(s - beta) / (2 alpha) and the kinks p0, p1, where g's slope jumps; any slope is then sound
(offsets are g's exact extremes over l, u and those points). Convex on an interval inside one
piece or inside [p0, p1]: tangent below, chord above; else planes parallel to the chord,
or at alpha's tangent slope.

Rounding: onnxruntime computes alpha x + beta, clips and multiplies by x (or a decomposition
with a Div by 6): a few roundings of the gate (<= 1) times |x|, and of y. Within the generic
allowance of |y| plus 2**-19 |x| (``Rounding.GENERIC_INPUT``); measured for the op and the
decompositions at every optimisation level (tests/ir/test_fused_rounding.py).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, Split
from bounds.rules.common import TANGENT_ALPHA
from bounds.rules.tangents import Curve, ibp_curve, relax_curve

# ONNX HardSwish's gate, as float32 attributes of its HardSigmoid
ONNX_ALPHA = float(np.float32(1.0 / 6.0))
ONNX_BETA = 0.5


@functools.lru_cache(maxsize=32)
def curve(alpha: float, beta: float) -> Curve:
    """The curve of x clip(alpha x + beta, 0, 1), alpha > 0."""
    a, b = float(alpha), float(beta)
    p0, p1 = -b / a, (1.0 - b) / a

    def f(x):
        return x * (a * x + b).clamp(0.0, 1.0)

    def df(x):
        one = torch.ones_like(x)
        return torch.where(x <= p0, 0 * one, torch.where(x >= p1, one, 2 * a * x + b))

    def crit(s, l, u):
        return [(s - b) / (2 * a), torch.full_like(l, p0), torch.full_like(l, p1)]

    def curvature(l, u):
        one_piece = (u <= p0) | (l >= p1) | ((l >= p0) & (u <= p1))
        return one_piece.to(l.dtype)

    return Curve(f"HardSwish(alpha={a:g}, beta={b:g})", f, df, crit, curvature)


def params(node) -> tuple[float, float]:
    alpha = float(node.attrs.get("alpha", ONNX_ALPHA))
    beta = float(node.attrs.get("beta", ONNX_BETA))
    if not (math.isfinite(alpha) and alpha > 0 and math.isfinite(beta)):
        raise ValueError(f"HardSwish node {node.name}: alpha={alpha!r} must be positive and "
                         f"beta={beta!r} finite")
    return alpha, beta


def _forward(node, args):
    # (in float64: alpha x + beta cancels near p0, where a float32 gate is off by ~u / |x|
    # relative and the product by many ulps of y)
    x = args[0]
    return curve(*params(node)).f(x.to(torch.float64)).to(x.dtype)


def _ibp(node, args):
    return ibp_curve(curve(*params(node)), f"HardSwish node {node.name!r}", args[0])


def _relax(node, lower, upper, alpha=None):
    return relax_curve(curve(*params(node)), f"HardSwish node {node.name!r}", lower, upper,
                       alpha)


RULES = (
    OpRule("HardSwish", forward=_forward, ibp=_ibp, relax=_relax,
           traits=OpTraits(elementwise=True),
           alpha=TANGENT_ALPHA, rounding=Rounding.GENERIC_INPUT, milp=Milp("relaxed"),
           # GenBaB splits at the midpoint: the best point of an interval holding a kink is
           # often the kink itself, which a table interpolated on a grid misses (a table
           # was up to 3850x the fresh optimum's area there)
           split=Split("midpoint", "interval"),
           doc="HardSwish x clip(alpha x + beta, 0, 1): exact IBP, chord/tangent planes"),
)
