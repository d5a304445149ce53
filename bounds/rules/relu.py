"""Relu: y = max(x, 0).

IBP: monotone. Relaxation on [l, u] with l < 0 < u: upper chord through (l, 0) and (u, u),
slope u / (u - l); lower line alpha * x with any alpha in [0, 1] (both lie below max(x, 0)).
Stable neurons are exact: identity when l >= 0, zero when u <= 0.
"""

from __future__ import annotations

import torch

from bounds.registry import OpRule, OpTraits
from bounds.types import Interval, Relaxation


def _forward(node, args):
    return torch.relu(args[0])


def _ibp(node, args):
    return Interval(torch.relu(args[0].lower), torch.relu(args[0].upper))


def relu_relax(node, lower, upper, alpha=None):
    active = lower >= 0
    inactive = upper <= 0
    unstable = ~(active | inactive)
    denom = torch.where(unstable, upper - lower, torch.ones_like(upper))
    up_slope = torch.where(unstable, upper / denom, active.to(upper.dtype))
    up_offset = torch.where(unstable, -lower * up_slope, torch.zeros_like(upper))
    if alpha is None:
        # CROWN's adaptive choice: slope 1 when the positive part dominates, else 0.
        alpha = (upper > -lower).to(upper.dtype)
    low_slope = torch.where(unstable, alpha, active.to(upper.dtype))
    return Relaxation(low_slope, torch.zeros_like(upper), up_slope, up_offset)


RULES = (
    OpRule(
        "Relu",
        forward=_forward,
        ibp=_ibp,
        relax=relu_relax,
        traits=OpTraits(monotone=True, elementwise=True, piecewise_linear=True,
                        convex=True, splittable=True),
        doc="max(x, 0)",
    ),
)
