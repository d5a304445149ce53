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
