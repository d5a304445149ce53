"""Periodic activations: Sin, Cos.

IBP: exact range; the extrema inside [l, u] (x = pi/2 + 2 pi k for sin) are candidates.
Relaxation: where the curvature has one sign on [l, u] (sin is concave on [2k pi, (2k+1) pi],
convex on the next half period) the classic chord / tangent-at-d pair; otherwise two planes
parallel to the chord. Sound for any slope s: the offsets are the exact extremes of
f(x) - s x, which lie at l, u or where f'(x) = s. For sin those are x = +-acos(s) + 2 pi k, and
f(x) - s x is linear in k on each family, so only the first and last k inside [l, u] matter.
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l); planes of slope f'(d) (the
tangent-type plane on fixed-curvature intervals, both planes otherwise).
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, TableGrid
from bounds.rules.common import TANGENT_ALPHA, table_split
from bounds.rules.tangents import Curve, ibp_curve, relax_curve

TWO_PI = 2 * math.pi
_TRAITS = OpTraits(elementwise=True)


def _family(base, l, u):
    """First and last points base + 2 pi k inside [l, u] (outside ones get clamped later)."""
    k_lo = torch.ceil((l - base) / TWO_PI)
    k_hi = torch.floor((u - base) / TWO_PI)
    return [base + TWO_PI * k_lo, base + TWO_PI * k_hi]


def _sin_crit(s, l, u):
    a = torch.acos(s.clamp(-1.0, 1.0))
    a = torch.where(s.abs() > 1, torch.full_like(a, float("nan")), a)
    return _family(a, l, u) + _family(-a, l, u)


def _cos_crit(s, l, u):
    a = torch.asin(s.clamp(-1.0, 1.0))
    a = torch.where(s.abs() > 1, torch.full_like(a, float("nan")), a)
    return _family(-a, l, u) + _family(math.pi + a, l, u)


def _half_period_curvature(shift: float):
    """Curvature sign of sin(x + shift): concave on [2k pi, (2k+1) pi] of the shifted argument."""

    def curvature(l, u):
        j = torch.floor((l + shift) / math.pi)
        fixed = (u + shift) <= (j + 1) * math.pi
        sign = torch.where(torch.remainder(j, 2) == 0, -1.0, 1.0).to(l.dtype)
        return torch.where(fixed, sign, torch.zeros_like(sign))

    return curvature


CURVES = {
    "Sin": Curve("Sin", torch.sin, torch.cos, _sin_crit, _half_period_curvature(0.0)),
    "Cos": Curve("Cos", torch.cos, lambda x: -torch.sin(x), _cos_crit,
                 _half_period_curvature(math.pi / 2)),
}


def _rule(op: str, fwd) -> OpRule:
    curve = CURVES[op]

    def forward(node, args):
        return fwd(args[0])

    def ibp(node, args):
        out = ibp_curve(curve, op, args[0])
        return type(out)(out.lower.clamp(min=-1.0), out.upper.clamp(max=1.0))

    def relax(node, lower, upper, alpha=None):
        return relax_curve(curve, op, lower, upper, alpha)

    return OpRule(op, forward=forward, ibp=ibp, relax=relax, traits=_TRAITS,
                  doc=f"{op}: exact IBP, chord/tangent or chord-parallel planes",
                  alpha=TANGENT_ALPHA, rounding=Rounding.GENERIC,
                  split=table_split(TableGrid(op)), milp=Milp("relaxed"))


RULES = (_rule("Sin", torch.sin), _rule("Cos", torch.cos))
