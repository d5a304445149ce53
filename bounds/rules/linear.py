"""Affine ops with weights: Linear (Gemm/MatMul with a constant right operand, plus bias).

Linear: y = x W^T + b over the last axis; W is consts[1] with shape [out, in], b is consts[2].
IBP: centre/radius form, y in [W c + b - |W| r, W c + b + |W| r]; exact for a box.
Backward: a bound A.y becomes (A W).x + A.b.
"""

from __future__ import annotations

from bounds.registry import OpRule, OpTraits
from bounds.rules.common import sum_to_batch_spec
from bounds.types import Interval


def _linear_forward(node, args):
    x, w = args[0], args[1]
    y = x @ w.transpose(-1, -2)
    return y + args[2] if len(args) > 2 and args[2] is not None else y


def _linear_ibp(node, args):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    center = x.center @ w.transpose(-1, -2)
    radius = x.radius @ w.abs().transpose(-1, -2)
    if bias is not None:
        center = center + bias
    return Interval(center - radius, center + radius)


def _linear_backward(node, coef, args):
    w = args[1]
    bias = args[2] if len(args) > 2 else None
    offset = None
    if bias is not None:
        offset = sum_to_batch_spec(coef * bias)
    return [coef @ w, None, None][: len(args)], offset


RULES = (
    OpRule(
        "Linear",
        forward=_linear_forward,
        ibp=_linear_ibp,
        backward=_linear_backward,
        traits=OpTraits(affine=True),
        doc="y = x W^T + b over the last axis",
    ),
)


