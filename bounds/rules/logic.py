"""Comparisons and boolean logic on 0/1 values: Equal, Greater, GreaterOrEqual, And, Or, Select,
and the float tests IsNaN, IsInf.

Booleans are stored as 0.0 / 1.0 in the IR's float tensors (the importer turns Less into
Greater with swapped operands, Not x into 1 - x, and a Where whose condition depends on the
input into Select). These ops are piecewise constant, so they have no linear relaxation: CROWN
concretises them with their intervals, which are exact wherever the operands' intervals fix
the outcome and the hull {0, 1} otherwise:

* Greater(a, b) is 1 on the whole box iff a.l > b.u, and 0 iff a.u <= b.l (>=: a.l >= b.u,
  a.u < b.l). Equal(a, b) is 1 iff both intervals are the same single point, 0 iff they are
  disjoint. Sound because every point of the box has a in [a.l, a.u] and b in [b.l, b.u].
* And / Or of boolean intervals: each operand is surely true (0 outside its interval), surely
  false (its interval is {0}) or either; the result is true/false iff the truth table says so
  for every combination the operands allow.
* Select(c, x, y) = x where c != 0 else y: the interval of x (y) where c is surely true
  (false), the hull of both where c may be either.
* IsNaN(x), IsInf(x): 0 on the whole box where x's interval is finite and inside float32's
  range (the float32 value lies in the interval, so it is a number, and below FLT_MAX in
  magnitude it did not overflow); otherwise either (jax2onnx writes IsNaN into sorts, to
  order NaNs last).
All are exact in float32 (a comparison or a copy rounds nothing). Comparisons and Select name
``concretise_backward`` so that CROWN refines their operands' bounds first (And/Or read
booleans, whose bounds CROWN cannot tighten).
"""

from __future__ import annotations

import torch

from bounds.registry import OpRule, OpTraits
from bounds.rules.common import STEP_FIELDS, concretise_backward
from bounds.types import Interval


def _lo(a):
    return a.lower if isinstance(a, Interval) else a


def _hi(a):
    return a.upper if isinstance(a, Interval) else a


def _as_float(flag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return flag.to(like.dtype)


def _dtype_of(args) -> torch.Tensor:
    """A floating tensor among the arguments, whose dtype the 0/1 result takes."""
    return next(_lo(a) for a in args if _lo(a).is_floating_point())


def surely_true(a) -> torch.Tensor:
    """Where a boolean operand is nonzero on the whole box."""
    return (_lo(a) > 0) | (_hi(a) < 0)


def surely_false(a) -> torch.Tensor:
    """Where a boolean operand is zero on the whole box."""
    return (_lo(a) == 0) & (_hi(a) == 0)


def _bool_interval(true_for_sure, false_for_sure, like) -> Interval:
    return Interval(_as_float(true_for_sure, like), _as_float(~false_for_sure, like))


def _greater_ibp(node, args):
    a, b = args
    like = _dtype_of(args)
    return _bool_interval(_lo(a) > _hi(b), _hi(a) <= _lo(b), like)


def _greater_equal_ibp(node, args):
    a, b = args
    like = _dtype_of(args)
    return _bool_interval(_lo(a) >= _hi(b), _hi(a) < _lo(b), like)


def _equal_ibp(node, args):
    a, b = args
    like = _dtype_of(args)
    point = (_lo(a) == _hi(a)) & (_lo(b) == _hi(b)) & (_lo(a) == _lo(b))
    disjoint = (_hi(a) < _lo(b)) | (_hi(b) < _lo(a))
    return _bool_interval(point, disjoint, like)


def _and_ibp(node, args):
    a, b = args
    like = _dtype_of(args)
    return _bool_interval(surely_true(a) & surely_true(b), surely_false(a) | surely_false(b),
                          like)


def _or_ibp(node, args):
    a, b = args
    like = _dtype_of(args)
    return _bool_interval(surely_true(a) | surely_true(b), surely_false(a) & surely_false(b),
                          like)


def _select_ibp(node, args):
    c, x, y = args
    yes, no = surely_true(c), surely_false(c)
    lower = torch.where(yes, _lo(x), torch.where(no, _lo(y), torch.minimum(_lo(x), _lo(y))))
    upper = torch.where(yes, _hi(x), torch.where(no, _hi(y), torch.maximum(_hi(x), _hi(y))))
    return Interval(lower, upper)


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _surely_finite(x) -> torch.Tensor:
    """Where x's float32 value is a finite number on the whole box."""
    return (_lo(x) > -_FLOAT32_MAX) & (_hi(x) < _FLOAT32_MAX)


def _float_test_ibp(node, args):
    x = args[0]
    like = _lo(x) if _lo(x).is_floating_point() else _lo(x).double()
    return _bool_interval(torch.zeros_like(like, dtype=torch.bool), _surely_finite(x), like)


def _is_nan_forward(node, args):
    return _as_float(torch.isnan(args[0]), args[0])


def _is_inf_forward(node, args):
    x = args[0]
    hit = torch.zeros_like(x, dtype=torch.bool)
    if node.attrs.get("detect_positive", 1):
        hit = hit | (x == float("inf"))
    if node.attrs.get("detect_negative", 1):
        hit = hit | (x == float("-inf"))
    return _as_float(hit, x)


def _compare_forward(fn):
    def forward(node, args):
        return _as_float(fn(args[0], args[1]), _dtype_of(args))

    return forward


def _select_forward(node, args):
    return torch.where(args[0] != 0, args[1], args[2])


_STEP = OpTraits()  # piecewise constant: no relaxation, no split
_FIELDS = STEP_FIELDS  # no alpha, split or MILP encoding; nothing rounds
RULES = (
    OpRule("Equal", forward=_compare_forward(torch.eq), ibp=_equal_ibp,
           backward=concretise_backward, traits=_STEP, **_FIELDS,
           doc="a == b as 0/1; 1 iff both are the same point, 0 iff disjoint"),
    OpRule("Greater", forward=_compare_forward(torch.gt), ibp=_greater_ibp,
           backward=concretise_backward, traits=_STEP, **_FIELDS,
           doc="a > b as 0/1 (Less swaps the operands)"),
    OpRule("GreaterOrEqual", forward=_compare_forward(torch.ge), ibp=_greater_equal_ibp,
           backward=concretise_backward,
           traits=_STEP, **_FIELDS, doc="a >= b as 0/1 (LessOrEqual swaps the operands)"),
    OpRule("And", forward=_compare_forward(lambda a, b: (a != 0) & (b != 0)), ibp=_and_ibp,
           traits=_STEP, **_FIELDS, doc="logical and of 0/1 values"),
    OpRule("Or", forward=_compare_forward(lambda a, b: (a != 0) | (b != 0)), ibp=_or_ibp,
           traits=_STEP, **_FIELDS, doc="logical or of 0/1 values"),
    OpRule("IsNaN", forward=_is_nan_forward, ibp=_float_test_ibp,
           backward=concretise_backward, traits=_STEP, **_FIELDS,
           doc="x is NaN, as 0/1: 0 where x's interval is finite"),
    OpRule("IsInf", forward=_is_inf_forward, ibp=_float_test_ibp,
           backward=concretise_backward, traits=_STEP, **_FIELDS,
           doc="x is +-inf (detect_positive, detect_negative), as 0/1: 0 where x's interval "
               "is inside float32's range"),
    OpRule("Select", forward=_select_forward, ibp=_select_ibp,
           backward=concretise_backward, traits=_STEP, **_FIELDS,
           doc="Where with an input-dependent condition: branch if fixed, else the hull"),
)
