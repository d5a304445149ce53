"""Elementwise arithmetic with broadcasting: Add, Sub, Neg, Mul, Div, Where.

Add/Sub: exact IBP [l1 + l2, u1 + u2] / [l1 - u2, u1 - l2]; backward passes A to each operand
(negated for the subtrahend) and sums it over broadcast axes; a constant operand c adds A.c.
Mul/Div: affine when exactly one operand is dynamic (and, for Div, the divisor is the
constant; the importer turns c / x into c * Reciprocal(x)). IBP by a constant c is sign-aware:
[min(c l, c u), max(c l, c u)]. Two dynamic operands: the interval product (min/max of the four
end products); division by an interval that contains 0 is unbounded (inf). Their CROWN backward
uses McCormick planes (see ``bounds.rules.bilinear``).
Where: the condition is a constant, so each output element copies one operand: affine and
monotone, IBP selects the ends.

Affinity of Mul, Div and MatMul depends on the node, not the op: their ``OpTraits.affine`` is
True meaning "affine when exactly one operand is dynamic (Div: the divisor is the constant)";
engines must also check the node, e.g. with ``node_is_affine``.
"""

from __future__ import annotations

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.rules import bilinear
from bounds.rules.common import (
    AFFINE_FIELDS,
    reduce_to_operand,
    static_shape,
    sum_to_batch_spec,
)
from bounds.rules.floors import nonneg_product_floor, nonneg_sum_floor
from bounds.types import Interval

NODE_AFFINE_OPS = ("Mul", "Div", "MatMul")


def node_is_affine(node, rule=None) -> bool:
    """True when ``node``'s output is affine in its dynamic inputs (constants fixed)."""
    if node.op in NODE_AFFINE_OPS:
        if len(node.dynamic_inputs) != 1:
            return False
        return node.op != "Div" or node.inputs[1] is None
    return rule is not None and rule.traits.affine


def _lo(a):
    return a.lower if isinstance(a, Interval) else a


def _hi(a):
    return a.upper if isinstance(a, Interval) else a


def _add_ibp(node, args):
    return Interval(_lo(args[0]) + _lo(args[1]), _hi(args[0]) + _hi(args[1]))


def _sub_ibp(node, args):
    return Interval(_lo(args[0]) - _hi(args[1]), _hi(args[0]) - _lo(args[1]))


def _neg_ibp(node, args):
    return Interval(-args[0].upper, -args[0].lower)


def _times(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x * y for interval ends, with 0 * inf = 0: an infinite end stands for reals without
    bound, and 0 times any real is 0 (IEEE's NaN there made [0, 1] * [-inf, inf] NaN, not
    [-inf, inf]: cctsdb's IoU head, a 0/1 flag times a quotient whose divisor may be 0).
    NaN operands stay NaN, and finite products keep their values and gradients."""
    p = x * y
    zero_times_inf = torch.isnan(p) & ((x == 0) | (y == 0))
    return torch.where(zero_times_inf, torch.zeros((), dtype=p.dtype, device=p.device), p)


def _product_ibp(a, b) -> Interval:
    """Interval product; constant operands are zero-width intervals."""
    if not isinstance(a, Interval) or not isinstance(b, Interval):
        x, c = (a, b) if isinstance(a, Interval) else (b, a)
        lo, hi = _times(x.lower, c), _times(x.upper, c)
        return Interval(torch.minimum(lo, hi), torch.maximum(lo, hi))
    prods = torch.stack(torch.broadcast_tensors(
        _times(a.lower, b.lower), _times(a.lower, b.upper), _times(a.upper, b.lower),
        _times(a.upper, b.upper)))
    return Interval(prods.amin(0), prods.amax(0))


def _mul_ibp(node, args):
    return _product_ibp(args[0], args[1])


def _div_ibp(node, args):
    a, b = args
    if not isinstance(b, Interval):
        lo, hi = _lo(a) / b, _hi(a) / b
        return Interval(torch.minimum(lo, hi), torch.maximum(lo, hi))
    crosses = (b.lower <= 0) & (b.upper >= 0)
    recip = Interval(1.0 / b.upper, 1.0 / b.lower)
    out = _product_ibp(a, recip) if isinstance(a, Interval) else _product_ibp(recip, a)
    inf = torch.full_like(out.upper, float("inf"))
    return Interval(torch.where(crosses, -inf, out.lower), torch.where(crosses, inf, out.upper))


def _where_forward(node, args):
    return torch.where(args[0].bool(), args[1], args[2])


def _where_ibp(node, args):
    cond = args[0].bool()
    return Interval(torch.where(cond, _lo(args[1]), _lo(args[2])),
                    torch.where(cond, _hi(args[1]), _hi(args[2])))


def _linear_combination_backward(signs):
    """Backward of sign[0] * a + sign[1] * b where either operand may be a constant."""

    def backward(node, coef, args):
        coefs, offset = [], None
        for sign, arg, name in zip(signs, args, node.inputs, strict=True):
            if name is None:
                term = sum_to_batch_spec(coef * arg) * sign
                offset = term if offset is None else offset + term
                coefs.append(None)
            else:  # (a + b: the coefficients themselves, no copy; no step writes in place)
                coefs.append(reduce_to_operand(coef if sign == 1 else coef * sign,
                                               static_shape(arg)))
        return coefs, offset

    return backward


def _scale_backward(node, coef, args, alpha=None):
    """x * c or x / c: A -> A * c (or A / c) summed over broadcast axes; products and
    quotients of two dynamic operands: McCormick planes (``bounds.rules.bilinear``)."""
    if not node_is_affine(node):
        if len(node.dynamic_inputs) != 2:
            return None, None  # c / x never reaches here: the importer emits c * Reciprocal(x)
        fn = bilinear.mul_backward if node.op == "Mul" else bilinear.div_backward
        return fn(node, coef, args, alpha)
    pos = 0 if node.inputs[0] is not None else 1
    const = args[1 - pos]
    scaled = coef / const if node.op == "Div" else coef * const
    coefs = [None, None]
    coefs[pos] = reduce_to_operand(scaled, static_shape(args[pos]))
    return coefs, None


def _neg_backward(node, coef, args):
    return [-coef], None


# per-coordinate maps: with constants (affine nodes) a box maps onto a box
_COORD = {"affine": True, "elementwise": True, "box_preserving": True}
_ARITH = {**AFFINE_FIELDS, "rounding": Rounding.ARITHMETIC}  # at most two roundings
# products of two dynamic operands: McCormick planes with alpha, GenBaB splits Mul's operands
# (not Div's: its divisor goes through a reciprocal first)
_PRODUCT = {"alpha": bilinear.PRODUCT_ALPHA, "rounding": Rounding.ARITHMETIC,
            "milp": Milp("affine")}
RULES = (
    OpRule("Add", forward=lambda node, a: a[0] + a[1], ibp=_add_ibp,
           backward=_linear_combination_backward((1.0, 1.0)),
           traits=OpTraits(monotone=True, **_COORD), doc="x + y", floor=nonneg_sum_floor,
           **_ARITH),
    OpRule("Sub", forward=lambda node, a: a[0] - a[1], ibp=_sub_ibp,
           backward=_linear_combination_backward((1.0, -1.0)),
           traits=OpTraits(**_COORD), doc="x - y", **_ARITH),
    OpRule("Neg", forward=lambda node, a: -a[0], ibp=_neg_ibp, backward=_neg_backward,
           traits=OpTraits(**_COORD), doc="-x", **{**_ARITH, "rounding": Rounding.EXACT}),
    OpRule("Mul", forward=lambda node, a: a[0] * a[1], ibp=_mul_ibp, backward=_scale_backward,
           traits=OpTraits(**_COORD),
           doc="x * y (affine if one operand is constant)", floor=nonneg_product_floor,
           split=bilinear.PRODUCT_SPLIT, **_PRODUCT),
    OpRule("Div", forward=lambda node, a: a[0] / a[1], ibp=_div_ibp, backward=_scale_backward,
           traits=OpTraits(**_COORD),
           doc="x / c (affine for a constant divisor)", split=None, **_PRODUCT),
    OpRule("Where", forward=_where_forward, ibp=_where_ibp,
           traits=OpTraits(affine=True, monotone=True, elementwise=True),
           doc="select x or y by a constant condition", rounding=Rounding.EXACT,
           **AFFINE_FIELDS),
)
