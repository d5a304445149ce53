"""Elu(alpha): f(x) = x for x > 0, alpha (exp(x) - 1) for x <= 0 (ONNX Elu, alpha = 1 by
default), for 0 <= alpha <= ELU_MAX_ALPHA.

Shape. f'(x) = alpha exp(x) on x < 0, 1 on x > 0; at 0 the one-sided slopes are alpha and 1
(a kink unless alpha = 1). f''(x) = alpha exp(x) >= 0 on x < 0, 0 on x > 0. So f is increasing
(alpha >= 0), convex on x <= 0 and linear on x >= 0; on the whole line f' is nondecreasing, i.e.
f is convex, exactly when alpha <= 1 (the slope at 0 goes up from alpha to 1). For alpha > 1
the kink at 0 is concave (the slope drops from alpha to 1): f is neither convex nor concave on an
interval across 0, so the op declares no convex trait.
IBP: monotone, [f(l), f(u)] (plus a few float64 ulps outward).
Relaxation (``bounds.rules.tangents``): where f is convex on [l, u] (alpha <= 1, or [l, u] on
one side of 0), chord above and tangent at d below; for alpha > 1 across 0, two planes parallel
to the chord (the chord's slope lies between 1 and f(l)/l, so the upper plane is the chord or
passes through the kink).
Sound for any slope s and any alpha >= 0: the offsets are the exact extremes of f(x) - s x,
which lie at l, u, the kink 0 or the root log(s / alpha) of alpha exp(x) = s on x < 0 (on
x > 0, f - s x is linear). alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l).
Numerics: alpha expm1(min(x, 0)) loses no digits near 0 and never overflows.
Rounding: Rounding.GENERIC (2^-19 |y| + 2^-21). onnxruntime 1.32 evaluates alpha (exp(x) - 1)
in float32, measured off by up to 1.45 alpha 2^-24 near x = -0.3, where |y| is small: the
absolute term 2^-21 = 8 * 2^-24 covers it with 2.7x room up to alpha = 2 (ELU_MAX_ALPHA; at
alpha = 10 it was exceeded). alpha < 0 makes f decreasing on x < 0 (the op declares monotone).
Other alphas are refused (``alpha_problem``; the importer raises UnsupportedOpError with it).
Split: GenBaB interval splits at the kink 0 where [l, u] crosses it (each half is then convex
or linear), else at the midpoint; MILP: the relaxation planes.
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, Split
from bounds.rules.common import TANGENT_ALPHA
from bounds.rules.tangents import Curve, ibp_curve, relax_curve

ELU_MAX_ALPHA = 2.0


def alpha_problem(alpha: float) -> str | None:
    """Why an Elu with this ``alpha`` is not handled (None when it is)."""
    if not math.isfinite(alpha) or alpha < 0:
        return (f"alpha={alpha!r}: a negative alpha makes Elu decreasing for x < 0 (the rule "
                "declares it monotone)")
    if alpha > ELU_MAX_ALPHA:
        return (f"alpha={alpha!r} > {ELU_MAX_ALPHA:g}: onnxruntime's float32 error (about "
                "alpha 2^-24 near 0) would exceed the generic rounding allowance 2^-21")
    return None


def _alpha(node) -> float:
    alpha = float(node.attrs.get("alpha", 1.0))
    problem = alpha_problem(alpha)
    if problem:
        raise ValueError(f"Elu node {node.name!r}: {problem}")
    return alpha


def elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """x for x > 0, alpha expm1(x) otherwise, in x's dtype."""
    return torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0)))


def elu_curve(alpha: float) -> Curve:
    """Elu(alpha) for relaxation (see the module docstring for shape and critical points)."""

    def df(x):
        return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp(max=0)))

    def crit(s, l, u):
        kink = torch.zeros_like(l)
        return [torch.log(s / alpha), kink] if alpha > 0 else [kink]

    def curvature(l, u):
        one = torch.ones_like(l)
        if alpha <= 1:
            return one
        return torch.where((u <= 0) | (l >= 0), one, 0 * one)

    return Curve(f"Elu({alpha:g})", lambda x: elu(x, alpha), df, crit, curvature)


def _forward(node, args):
    return elu(args[0], _alpha(node))


def _ibp(node, args):
    return ibp_curve(elu_curve(_alpha(node)), f"Elu node {node.name!r}", args[0])


def _relax(node, lower, upper, alpha=None):
    return relax_curve(elu_curve(_alpha(node)), f"Elu node {node.name!r}", lower, upper, alpha)


RULES = (
    OpRule("Elu", forward=_forward, ibp=_ibp, relax=_relax,
           traits=OpTraits(monotone=True, elementwise=True),
           doc="Elu(alpha), 0 <= alpha <= 2: exact IBP; chord/tangent planes (convex for "
               "alpha <= 1), chord-parallel planes across the concave kink for alpha > 1",
           alpha=TANGENT_ALPHA, rounding=Rounding.GENERIC, split=Split("zero", "interval"),
           milp=Milp("relaxed")),
)
