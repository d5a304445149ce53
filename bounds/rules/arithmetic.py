"""Elementwise arithmetic with broadcasting: Add, Sub, Neg (affine in every dynamic input).

Add/Sub: exact IBP [l1 + l2, u1 + u2] / [l1 - u2, u1 - l2]; backward passes A to each operand
(negated for the subtrahend), reduced over broadcast axes by the engine's generic VJP.
"""

from __future__ import annotations

from bounds.registry import OpRule, OpTraits
from bounds.types import Interval


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


RULES = (
    OpRule("Add", forward=lambda node, a: a[0] + a[1], ibp=_add_ibp,
           traits=OpTraits(affine=True, monotone=True, elementwise=True), doc="x + y"),
    OpRule("Sub", forward=lambda node, a: a[0] - a[1], ibp=_sub_ibp,
           traits=OpTraits(affine=True, elementwise=True), doc="x - y"),
    OpRule("Neg", forward=lambda node, a: -a[0], ibp=_neg_ibp,
           traits=OpTraits(affine=True, elementwise=True), doc="-x"),
)
