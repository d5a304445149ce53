"""Floating-point soundness: how far the float32 network can stray from exact arithmetic.

Our engines compute in float64 and bound the *real-valued* network. The network that
onnxruntime runs is float32, so every node's computed value may differ from the exact value of
its (computed) inputs by a rounding error ``e`` with ``|e| <= delta``. We treat ``e`` as an extra
bounded perturbation entering at each node: IBP widens each interval by ``delta`` and the
backward (CROWN) pass subtracts ``|A| . delta`` from the bound at each node it passes. Since the
engines then bound ``f(x) + sum of perturbations`` for all perturbations within their boxes, the
float32 network's outputs are enclosed whatever rounding happened.

Error model (u = 2**-24, the float32 unit roundoff):
* dot products over n terms plus a bias, in any summation order (FMA or not, blocked or not):
  |e| <= gamma(n+1) * (|W| |x| + |b|), gamma(k) = k u / (1 - k u)  [Higham, Accuracy and
  Stability of Numerical Algorithms, Thm 3.1]; |x| is bounded by max(|lower|, |upper|);
* elementwise arithmetic (Add, Sub, Mul, Div, LeakyRelu): at most two roundings: 2u |y|;
* data movement (reshape, transpose, slicing, padding, Relu, max), comparisons, logic and
  index ops (ArgMax, OneHot, Cast to integers) are exact: 0;
* Slack (``bounds.rules.slack``): a bound its node states, relative * (|x| + |s|) (a
  LayerNormalization's variance, LRN's running channel sum, as onnxruntime computes them);
* interpolation at an input-dependent grid (``bounds.rules.grid_sample``): the runtime's
  float32 coordinates move each tap's weight by up to a few u times the image's size, so
  (8 (size + 1) + 8) u M, M the largest pixel magnitude the taps can reach;
* Pow with exponent 2 or 3 (products: onnxruntime multiplies, or calls powf, below one
  ulp): 3u |y| + 2**-126 (a result that underflows to a subnormal or 0); the generic
  allowance's absolute term (2**-21) made the square of a zero LayerNorm mean 4.8e-7, and
  the variance of a constant token (DeiT's class token) lost its lower bound;
* transcendental functions, whose implementations in onnxruntime promise no error bound:
  2**-19 |y| + 2**-21 absolute, a deliberately generous allowance (GENERIC_INPUT ops add
  2**-19 |x|: Gelu's tanh form was measured off by ~eps32 |x| at x = -4.4).
Which class an op is in is stated by its rule (``OpRule.rounding``, a required field: a new op
cannot silently fall into the generic class). The absolute term was
  2**-23 = 1.19e-7 until onnxruntime's Sigmoid was measured off by 1.38e-7 at sigmoid(-12);
  2**-21 leaves 3.5x room.
The float64 arithmetic of the engines themselves (relative error ~1e-16 per operation) is
covered by a final relative margin in ``final_margin``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bounds.engine.constants import array_memo
from bounds.float32_upper import full_float32, nonneg_sum_upper
from bounds.registry import Rounding, rules
from bounds.rules.linear import WEIGHTED_OPS, forward_products
from bounds.types import Interval

U32 = 2.0**-24
# Each rule declares its class (``OpRule.rounding``); the model of each class is below.


class OpsOf:
    """The registered ops whose rules declare one rounding class (read on use, so importing
    this module builds no registry)."""

    def __init__(self, kind: Rounding):
        self.kind = kind

    def __contains__(self, op) -> bool:
        registry = rules()
        return op in registry and registry.get(op).rounding is self.kind

    def __iter__(self):
        return (op for op in rules().keys() if op in self)


def __getattr__(name: str):
    # DOT_OPS is read by the import check (verifier/onnx_import/check_eval.py); prefer
    # ``rule.rounding is Rounding.DOT``
    if name == "DOT_OPS":
        return OpsOf(Rounding.DOT)
    raise AttributeError(name)


GENERIC_REL = 2.0**-19
GENERIC_ABS = 2.0**-21


def generic_error(magnitude: torch.Tensor) -> torch.Tensor:
    """The allowance of ops with no error analysis of their own, for outputs of ``magnitude``."""
    return GENERIC_REL * magnitude + GENERIC_ABS


# Pow with these exponents is a product: onnxruntime multiplies (x * x, x * x * x) or calls
# the C library's pow, whose error is below one ulp; either way at most 3u |y| for a normal
# result, and a result that underflows is off by less than the smallest normal float32.
SMALL_POWERS = (2.0, 3.0)
_SMALLEST_NORMAL = 2.0**-126


def power_error(magnitude: torch.Tensor) -> torch.Tensor:
    """The allowance of x^2 and x^3 for outputs of ``magnitude``."""
    return 3 * U32 * magnitude + _SMALLEST_NORMAL


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def gamma_of(k: torch.Tensor) -> torch.Tensor:
    """gamma(k) elementwise (``k``: counts, as floats)."""
    return k * U32 / (1 - k * U32)


# Exact-zero counts are evaluated in float32 (exact for integers below 2**24) on outputs with
# at least this many elements (where full float32 is available), else in the bounds' dtype.
COUNT_FLOAT32_ELEMENTS = 1 << 15


def nonzero_terms(node, rule, args: list, n: int) -> torch.Tensor | None:
    """Per output of the weighted ``node`` (one dynamic input x, constant weights), at most how
    many of its products can be nonzero (``None``: every output may have all ``n``): the
    products whose input's interval is not [0, 0] and whose weight is not 0.

    Why it bounds the error (module docstring, class DOT): a product with an exact-zero factor
    is an exact zero (also under FMA), and adding an exact zero is exact, so along any path of
    the summation tree only the additions whose other operand sums at least one possibly
    nonzero product can round: an output with m such products carries the error of a sum of m
    terms (plus the bias), gamma(m + 1) (|W| |x| + |b|), in any order. The interval of x
    encloses the float32 network's value (the engines' invariant), so [0, 0] means that value
    is exactly 0 (a Relu whose input is proven <= 0, zero padding)."""
    x = args[0] if args else None
    if not (isinstance(x, Interval) and len(node.dynamic_inputs) == 1 and 1 in node.consts
            and n + 1 < 2**24):
        return None
    maybe = (x.lower != 0) | (x.upper != 0)
    if bool(maybe.all()):
        return None
    if node.op == "Linear" and _all_nonzero(node.consts[1]):  # every weight: a sum
        counts = maybe.sum(-1, keepdim=True, dtype=x.lower.dtype)
        return counts.expand(*maybe.shape[:-1], int(node.consts[1].shape[0])).clamp(max=n)
    dtype = x.lower.dtype
    if x.lower.numel() >= COUNT_FLOAT32_ELEMENTS and full_float32(x.lower.device):
        dtype = torch.float32
    ops = [maybe.to(dtype)]
    for a in args[1:]:
        if isinstance(a, Interval):
            return None
        ops.append((a != 0).to(dtype) if len(ops) == 1 else torch.zeros_like(a, dtype=dtype))
    counts = rule.forward(node, ops).to(x.lower.dtype)
    return counts.clamp(min=0, max=n)


# id(weights) -> (weak reference to them, whether none is 0)
_NONZERO: dict = {}


def _all_nonzero(w) -> bool:
    return array_memo(_NONZERO, w, lambda a: bool((np.asarray(a) != 0).all()))


def _magnitude(x: Interval | torch.Tensor) -> torch.Tensor:
    """max |x| over an interval, or |x| of a constant operand."""
    if not isinstance(x, Interval):
        return x.abs()
    return torch.maximum(x.lower.abs(), x.upper.abs())


def reduction_length(node, in_shape: tuple[int, ...]) -> int:
    if node.op in WEIGHTED_OPS and 1 in node.consts:
        return forward_products(node.op, node.consts[1].shape, node.attrs)
    return int(math.prod(in_shape)) if in_shape else 1


def rounding_error(node, rule, args: list, out: Interval, in_shape) -> torch.Tensor | None:
    """Bound |e| on the float32 rounding error of ``node`` (by its rule's rounding class);
    None when the op is exact."""
    kind = rule.rounding
    if kind is Rounding.EXACT:
        return None
    if kind is Rounding.ARITHMETIC:
        return 2 * U32 * _magnitude(out)
    if kind is Rounding.DOT:
        abs_args = [_magnitude(a) for a in args]
        # These ops are (multi)linear with nonnegative structure, so forward(|args|) >= |W||x|.
        n = reduction_length(node, in_shape)
        # weighted ops: their allowance scale |W| |x| + |b| is an upper bound that float32
        # may compute (``float32_upper``)
        if node.op in WEIGHTED_OPS:
            scale = nonneg_sum_upper(lambda ops: rule.forward(node, list(ops)), abs_args,
                                     n + 1, out.lower.numel())
            terms = nonzero_terms(node, rule, args, n)
            if terms is not None:
                return gamma_of(terms + 1) * scale
        else:
            scale = rule.forward(node, abs_args)
        return gamma(n + 1) * scale
    if kind is Rounding.SLACK:  # (bounds/rules/slack.py): relative * (|x| + |s|)
        return node.attrs["relative"] * (_magnitude(args[0]) + _magnitude(args[1]))
    if kind is Rounding.POWER and node.attrs.get("exponent") in SMALL_POWERS:
        return power_error(_magnitude(out))
    if kind is Rounding.SAMPLING:
        from bounds.rules.grid_sample import sampling_error

        return sampling_error(node, args)
    delta = generic_error(_magnitude(out))
    if kind is Rounding.GENERIC_INPUT:  # e.g. x * Phi(x): float32 error grows like eps32 |x|
        delta = delta + GENERIC_REL * _magnitude(args[0])
    return delta


def final_margin(lower: torch.Tensor) -> torch.Tensor:
    """Outward margin for the engines' own float64 arithmetic on a final lower bound."""
    return lower - 1e-9 * (1 + lower.abs())


def float32_below(x: torch.Tensor) -> torch.Tensor:
    """The largest float32 value <= each ``x`` (any float dtype): a lower bound stored in
    float32 stays a lower bound of the real value it bounds (round to nearest alone can round
    up; a value beyond float32's range becomes -inf, or float32's largest below +inf)."""
    x32 = x.to(torch.float32)
    if x.dtype == torch.float32:
        return x32
    above = x32.to(x.dtype) > x
    return torch.where(above, torch.nextafter(x32, torch.full_like(x32, -math.inf)), x32)


def float32_above(x: torch.Tensor) -> torch.Tensor:
    """The smallest float32 value >= each ``x`` (see :func:`float32_below`)."""
    return -float32_below(-x)
