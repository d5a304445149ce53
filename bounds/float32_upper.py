"""Upper bounds of nonnegative weighted sums, evaluated in float32.

Interval arithmetic on a weighted node needs three products per domain: W c + b (the centre),
|W| r (the radius) and |W| m + |b| (the scale of its float32 rounding allowance). The last two
sum nonnegative terms only, so they need no precise arithmetic, just an upper bound, and torch's
float32 convolutions on CPU are an order of magnitude faster than its float64 ones.

Error bound (u = 2**-24, eta = 2**-126 for underflow, flushed or gradual): each operand cast to
float32 by rounding to nearest satisfies x32 >= x (1 - u) - eta; each product and each partial
sum of nonnegative numbers loses at most a factor (1 - u) and eta. An output summing at most n
products (a bias added counts as one more) therefore satisfies

    computed >= (1 - u)**(n + 3) exact - eta (n + 1) (max w + max x + 1),

so exact <= (computed + eta (n + 1) (max w + max x + 1)) (1 + gamma(n + 3)), since
(1 - u)**-k <= 1 + gamma(k). No cancellation can occur, so this holds in any summation order.
A value beyond float32's range becomes +inf: still an upper bound.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch

U32 = 2.0**-24
ETA32 = 2.0**-126
# NNCERT_FLOAT32_PRODUCTS=0 keeps every product of the bound engines in float64 (ablation:
# this module's upper bounds and adjoint_precision's float32 adjoints).
ENABLED = os.environ.get("NNCERT_FLOAT32_PRODUCTS", "1") != "0"
# Outputs with fewer elements are evaluated in the operands' dtype: the casts would cost about
# what float32 saves.
MIN_ELEMENTS = 1 << 15


def _gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def full_float32(device: torch.device) -> bool:
    """Whether torch evaluates float32 products on ``device`` as sums of IEEE float32 products
    (the error model of the allowances that use it): on the CPU unless reduced-precision
    matmuls or oneDNN's bf16/tf32 modes are on; never on CUDA (below)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if device.type == "cpu":  # oneDNN may be set to compute float32 in bf16 or tf32
        return all(_ieee(getattr(torch.backends.mkldnn, part, None))
                   for part in ("conv", "matmul")) and _ieee(torch.backends.mkldnn)
    # CUDA: never. TF32 aside (cudnn.allow_tf32 is on by default), cuDNN may evaluate a
    # float32 convolution by FFT or Winograd, whose error is not the summation bound these
    # allowances assume; the float64 path is exact enough and fast on a GPU.
    return False


def _ieee(backend) -> bool:
    """Whether ``backend`` (torch.backends.mkldnn or one of its parts) leaves float32 at IEEE
    precision: no ``fp32_precision`` setting, or "none" (inherit) or "ieee"."""
    return getattr(backend, "fp32_precision", "none") in ("none", "ieee")


def nonneg_sum_upper(apply: Callable[[Sequence[torch.Tensor]], torch.Tensor],
                     operands: Sequence[torch.Tensor], terms: int,
                     out_elements: int) -> torch.Tensor:
    """An upper bound, in the operands' dtype, of ``apply(operands)``: a sum of at most
    ``terms`` products of nonnegative operand entries at every output (a bias counts as a
    term). Evaluated in float32 when the operands are float64, the output holds at least
    MIN_ELEMENTS elements and the device computes full float32; else exactly as asked."""
    first = operands[0]
    if (not ENABLED or first.dtype != torch.float64 or out_elements < MIN_ELEMENTS
            or not full_float32(first.device)):
        return apply(operands)
    largest = sum(float(t.max()) if t.numel() else 0.0 for t in operands)
    if not math.isfinite(largest):  # (+inf stays where it is: the float64 arithmetic)
        return apply(operands)
    computed = apply([t.to(torch.float32) for t in operands]).to(torch.float64)
    underflow = ETA32 * (terms + 1) * (largest + 1)
    return (computed + underflow) * (1 + _gamma(terms + 3))
