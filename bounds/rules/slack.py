"""Slack(x, s): x, standing for a runtime computation that rounds differently from x's own
pieces, within relative * (|x| + |s|) of it (attribute ``relative``).

onnxruntime's LayerNormalization takes the variance as mean(x^2) - mean(x)^2 in float32; as
bounds propagate, that difference of two means loses their dependence (its lower end falls
below 0, its upper end grows with mean(x^2)'s). The importer writes the centred variance v =
mean((x - m)^2), exact for the same reals, and Slack(v, m^2) with the error analysis's
constant (``floors.variance_slack``): the runtime's value is within c (v + m^2) of v. Bounds
then follow v linearly (CROWN passes the coefficient through) and the error enters as a
rounding allowance (``Rounding.SLACK``): |A| c (|v| + |m^2|) at the node, as every rounding
does. The floor keeps the pointwise form v - c |v| - c |s|, increasing in v: its lower end
is the lower end of v less c times itself, not less c times v's upper end. LRN's running
channel sum in onnxruntime is stated the same way (``converters/composite.py``).
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.types import Interval


def _floor(node, args) -> torch.Tensor:
    """x - c |x| - c |s| at x's lower end (increasing in x for c < 1)."""
    x_low, s, rel = args[0].lower, args[1], node.attrs["relative"]
    s_size = torch.maximum(s.lower.abs(), s.upper.abs()) if isinstance(s, Interval) else s.abs()
    low = x_low - rel * x_low.abs() - rel * s_size
    return torch.where(torch.isnan(low), torch.full_like(low, -math.inf), low)


def _backward(node, coef, args):
    """The identity on x; s only sizes the allowance."""
    return [coef, None], None


RULES = (
    OpRule("Slack", forward=lambda node, a: a[0], ibp=lambda node, a: a[0], backward=_backward,
           traits=OpTraits(affine=True), floor=_floor, alpha=None, split=None,
           milp=Milp("affine"),
           rounding=Rounding.SLACK,
           doc="x, whose runtime value is within relative * (|x| + |s|) of it"),
)
