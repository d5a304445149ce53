"""Lower bounds that a node's value meets in exact arithmetic and in float32 alike
(``OpRule.floor``).

Float32 rounding is monotone (round to nearest never swaps the order of two values), so an
operation that cannot go below a bound in exact arithmetic cannot go below that bound's
float32 rounding down either. IBP's rounding allowance is a symmetric widening, blind to such
facts: the mean of squares in a LayerNorm came out at -0.43, and the square root after it had
no sound bound at all.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bounds.float32_upper import U32
from bounds.types import Interval


def _lower(arg) -> torch.Tensor:
    return arg.lower if isinstance(arg, Interval) else torch.as_tensor(arg)


def round_down_float32(x: torch.Tensor) -> torch.Tensor:
    """The largest float32 value at or below ``x`` (in ``x``'s dtype)."""
    near = x.to(torch.float32)
    down = torch.where(near.to(x.dtype) > x,
                       torch.nextafter(near, torch.full_like(near, -math.inf)), near)
    return down.to(x.dtype)


def _nonneg(args) -> torch.Tensor:
    """Where every argument's lower end is >= 0 (broadcast over the arguments)."""
    masks = [_lower(a) >= 0 for a in args]
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out


def nonneg_sum_floor(node, args) -> torch.Tensor | None:
    """x + y with x, y >= 0 is at least max(x, y): in float32 too (x + y >= x, rounding is
    monotone), so at least the float32 rounding down of the larger lower end (a LayerNorm's
    variance plus its epsilon: at least the epsilon). None where no position qualifies (a
    residual sum of a convolution and a Relu: no work past the mask)."""
    ok = _nonneg(args)
    if not bool(ok.any()):
        return None
    low = torch.maximum(*torch.broadcast_tensors(*[_lower(a) for a in args]))
    return torch.where(ok, round_down_float32(low), torch.full_like(low, -math.inf))


def nonneg_product_floor(node, args) -> torch.Tensor | None:
    """x * y with x, y >= 0 is >= 0 (exact and float32); None where no position qualifies."""
    ok = _nonneg(args)
    if not bool(ok.any()):
        return None
    like = next(a.lower for a in args if isinstance(a, Interval))
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.where(ok, zero, zero - math.inf)


def running_sum_slack(steps: int) -> float:
    """c with a running float32 sum of ``steps`` roundings within c B of the exact sum, where
    B bounds the sum of the |partial sums| the roundings act on (each rounds by at most u
    times its exact value plus the error so far: u B / (1 - steps u)). onnxruntime's LRN
    keeps such a sum over the channels (the importer states B: ``local_response_normalization``
    in converters/composite.py). Float32, rounded up."""
    c = U32 / (1.0 - steps * U32)
    return float(np.nextafter(np.float32(c), np.float32(np.inf)))


def nonneg_reduce_floor(forward):
    """A sum or mean over axes (``forward``) of values >= 0 is >= 0, exact and float32: 0
    where no reduced element's lower end is negative or NaN (``forward`` of their
    indicator: a count, 0 exactly when there is none)."""

    def floor(node, args) -> torch.Tensor:
        x = args[0]
        negative = forward(node, [(~(x.lower >= 0)).to(x.lower.dtype)])
        return torch.where(negative == 0, torch.zeros_like(negative),
                           torch.full_like(negative, -math.inf))

    return floor


def variance_slack(n: int) -> float:
    """c with the runtime's mean(x^2) - mean(x)^2 over n float32 values within c A of the
    exact variance, A = mean(x^2) exactly: the float sum of squares is off by at most n u A,
    the float mean by n u mean|x| with mean|x|^2 <= A, so its square by (2 n + 1) u A, and
    the last subtraction rounds once more: 2 (3 n + 5) u A to first order (the factor 2
    covers the rest), either way. Float32, rounded up (the importer stores it:
    ``bounds.rules.slack``)."""
    c = 2.0 * (3 * n + 5) * U32 * (1.0 + 4.0 * (n + 1) * U32)
    return float(np.nextafter(np.float32(c), np.float32(np.inf)))


#: Bisection steps for the centre of a box's least spread, then one Newton step (g' is piecewise
#: linear: exact once no end l_i, u_i lies between the point and the optimum).
_CENTRE_STEPS = 20
_U64 = 2.0**-53


def centred_square_floor(lower: torch.Tensor, upper: torch.Tensor, dims: tuple[int, ...]
                         ) -> torch.Tensor:
    """A lower bound of mean over ``dims`` of (x - mean x)^2 for every x in [lower, upper]
    (kept dims), holding for the runtime's float32 value of that mean too.

    mean (x - mean x)^2 = min over c of g(c) = mean (x - c)^2, so its minimum over the box is
    the minimum over c of g(c) = mean dist(c, [l_i, u_i])^2 (each x_i at its nearest point
    to c): one convex variable, found by bisection on g' (continuous, nondecreasing,
    piecewise linear) and a Newton step. At either point c, convexity gives min g >= g(c) -
    |g'(c)| W (W = max u - min l, which holds c and the optimum), less float64's own error in
    g and g'; the larger of the two bounds is kept.
    The runtime's value is at least the minimum times (1 - 2 (n + 6) u): its centre m is
    some float (mean (x - m)^2 >= mean (x - mean x)^2 for any m), then one rounding per
    difference, square and division and (n - 1) u relative for a sum of n values >= 0 in any
    order; 2^-125 covers squares that underflow. -inf where an end is not finite."""
    lo, hi = lower.to(torch.float64), upper.to(torch.float64)
    n = math.prod(lo.shape[d] for d in dims)
    finite = (torch.isfinite(lo) & torch.isfinite(hi)).all(dim=dims, keepdim=True)
    lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
    hi = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi))
    left, right = lo.amin(dim=dims, keepdim=True), hi.amax(dim=dims, keepdim=True)
    span = right - left

    def slope(c):  # n g'(c) / 2
        return (torch.relu(c - hi) - torch.relu(lo - c)).sum(dim=dims, keepdim=True)

    def least_at(c):  # min g >= g(c) - |g'(c)| W, less float64's errors in g and g'
        gap = torch.relu(c - hi) + torch.relu(lo - c)
        g = (gap * gap).mean(dim=dims, keepdim=True) * (1 - (n + 4) * _U64)
        dg = (2.0 / n) * (slope(c).abs() + gap.sum(dim=dims, keepdim=True) * (n + 2) * _U64)
        return g - dg * (span + (left.abs() + right.abs()) * _U64 * 4)

    for _ in range(_CENTRE_STEPS):
        c = (left + right) / 2
        rising = slope(c) >= 0
        left, right = torch.where(rising, left, c), torch.where(rising, c, right)
    c = (left + right) / 2
    outside = ((c > hi) | (c < lo)).sum(dim=dims, keepdim=True)
    newton = torch.where(outside > 0, c - slope(c) / outside.clamp(min=1), c)
    least = torch.relu(torch.maximum(least_at(c), least_at(newton.clamp(left, right))))
    floor = least * (1 - 2 * (n + 6) * U32) - 2.0**-125
    return torch.where(finite, torch.relu(floor), torch.full_like(floor, -math.inf))
