"""Float32 adjoints of weighted nodes inside float64 backward passes, with their error bound.

The dominant cost of CROWN on convolutional nets is the adjoint of each Conv (a transposed
convolution of the coefficients), and torch's float64 convolutions on CPU are an order of
magnitude slower than its float32 ones (a 3x3, 32-channel, 16x16 conv_transpose2d on 100 rows:
59 vs 4.9 ms, one thread). So the pass, which keeps its coefficients, relaxations and offsets in
float64, may take the adjoint of a Conv or ConvTranspose node in float32:

    A_in = fl32(fl32(A_out) W32),   W32 = fl32(W) (exact for a float32 model's weights).

Error bound (u = 2**-24; Higham, Thm 3.1 and Lemma 3.3): every entry of the adjoint is a sum of
at most k products (k: the output elements one input element feeds, ``adjoint_length``), in
whatever order the kernel sums them, so

    |A_out W - A_in| <= u |A_out||W| + u(1+u)|A_out||W| + gamma(k)(1+u)^2 |A_out||W|
                     <= gamma(k + 3) |A_out| |W|.

With x the node's input in its interval [c - r, c + r], the pass writes
A_out . (W x + b) = A_out . f(c) + A_out W (x - c) and replaces A_out W by A_in:

    A_out . y >= A_out . f(c) - A_in . c + A_in . x - gamma(k + 3) |A_out| (|W| r),

with f(c) = W c + b and |W| r evaluated in float64 once per bounds. Centring matters: the
error acts on the radius, not on the magnitude of x (an input box of eps = 0.004 around pixels
near 1, a ReLU output in [0, u]). The node's own float32 rounding allowance (``rounding.py``,
class DOT) is subtracted as before, so the pass subtracts |A_out| . (delta + gamma(k + 3) |W| r)
(``adjoint_gamma``).

Stride (``adjoint_length``): a Conv input element x_i (one spatial axis) feeds output o
through tap t when o s + t d - pad = i, so the taps it uses satisfy t d = i + pad (mod s),
one residue class of t modulo s / gcd(s, d): at most ceil(K / (s / gcd(s, d))) of the K taps
per axis, k = Cout/g times their product (a 3x3 kernel at stride 2: 4 taps, not 9).

Exact zeros (``row_scale``): a product with an exact-zero factor is an exact zero, and adding
an exact zero is exact, so an entry whose sum has n nonzero products carries the error of a
sum of n terms, gamma(n + 3) |A_out||W| with the same derivation. A row of A_out with m
nonzero entries gives each entry of its adjoint at most min(k, m) nonzero products, so that
row's allowance is gamma(min(k, m) + 3) |A_out| (|W| r): the rows of a pass that starts from
single neurons (one nonzero) take gamma(4) at their first weighted node instead of gamma(k + 3).
(A float64 entry that underflows to zero in float32 is counted as nonzero: the count only
grows; its lost value is the underflow term's.)

Underflow (values below 2**-126 may be flushed to zero) adds an absolute error. With
|A_out|, |W| <= LARGEST_COEF (checked before the float32 step), each of the k products and
sums, and the casts, contribute at most 2**-126 (|a| + |w| + 1) (1+u)^2, amplified by at most
(1 + gamma(k)) <= 2 along the sum: at most k 2**-122 (2**41 + 1) <= k 2**-80 per entry of A_in,
so the bound loses at most k 2**-80 sum(r) more (``underflow_error``). The same limit keeps
every float32 sum below k 2**80, far from overflow.

The bound holds for an ordinary (direct or im2col/col2im) float32 evaluation. It would not for
reduced-precision "float32" math (TF32 on CUDA, bf16 fast-math on CPU): ``full_float32``
allows the float32 adjoint only where torch is set to full float32 precision.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from bounds.engine.constants import array_memo
from bounds.engine.rounding import U32, gamma
from bounds.float32_upper import full_float32
from bounds.graph import Node
from bounds.rules.linear import channels_last_kernel, strided_taps

# The ops whose adjoints are taken in float32: convolutions. Linear's float32 matrix products
# are only about twice as fast as float64 ones, which the casts and the centring eat up, while
# the wider allowance loosens MLP bounds (mnistfc 256x4 -1.783 -> -1.784).
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose"})
# Adjoints with fewer coefficient elements stay in float64: casts then cost about what the
# narrower arithmetic saves (ERAN's 200-wide Linear on 400 rows: 0.73 vs 0.34 ms per product).
MIN_ELEMENTS = 1 << 15
# Coefficients and weights of larger magnitude keep the adjoint in float64 (overflow, and the
# underflow term's premise).
LARGEST_COEF = 2.0**40
# A switch for ablation runs (NNCERT_FLOAT32_PRODUCTS=0, see float32_upper) and for tests that
# compare both paths.
ENABLED = os.environ.get("NNCERT_FLOAT32_PRODUCTS", "1") != "0"


def adjoint_length(node: Node) -> int:
    """Most products summed in one entry of the node's adjoint A -> A W (``node`` weighted)."""
    w = node.consts[1]
    if node.op == "Linear":
        return int(w.shape[0])
    groups = int(node.attrs.get("group", 1))
    kernel = math.prod(int(s) for s in w.shape[2:])
    if node.op == "Conv":  # weight [Cout, Cin/g, *k]: an input feeds Cout/g channels
        return int(w.shape[0]) // groups * strided_taps(
            w.shape[2:], node.attrs.get("strides"), node.attrs.get("dilations"))
    return int(w.shape[1]) * kernel  # ConvTranspose, weight [Cin, Cout/g, *k]


def uses_float32(node: Node, coef: torch.Tensor, delta: torch.Tensor | None) -> bool:
    """Whether the pass takes ``node``'s adjoint of ``coef`` (float64, dense) in float32: a
    weighted node with constant weights, a finite rounding allowance to widen, and enough
    coefficients for the narrower arithmetic to pay."""
    if not (ENABLED and node.op in WEIGHTED_OPS and coef.dtype == torch.float64
            and len(node.dynamic_inputs) == 1 and 1 in node.consts
            and delta is not None and coef.numel() >= MIN_ELEMENTS
            and full_float32(coef.device)):
        return False
    return _largest_weight(node.consts[1]) <= LARGEST_COEF


# id(weights) -> (weak reference to them, their largest magnitude): read on every step
_LARGEST: dict = {}


def _largest_weight(w: np.ndarray) -> float:
    return array_memo(_LARGEST, w, lambda a: float(np.abs(a).max(initial=0.0)))


def underflow_error(node: Node) -> float:
    """Absolute error per entry of a float32 adjoint from underflow, per unit of |x|."""
    return adjoint_length(node) * 2.0**-80


def adjoint_gamma(node: Node) -> float:
    """The relative error bound of the node's float32 adjoint: gamma(k + 3) (module docstring)."""
    return gamma(adjoint_length(node) + 3)


# ``row_scale`` first counts the nonzeros of this many times the adjoint's length of leading
# entries per row.
COUNT_PROBE = 8


def row_scale(length: int, absolute) -> torch.Tensor | None:
    """Per row ([B, S]) the factor gamma(n + 3) / gamma(k + 3) <= 1 by which a row of
    coefficients with m nonzero entries may scale its allowance gamma(k + 3) |A_out| (|W| r),
    n = min(k, m) (module docstring, "Exact zeros"); None where every row has m >= k.
    ``absolute``: |A_out|, dense [B, S, *shape] or windows (``patches.Patches``)."""
    values = (absolute if isinstance(absolute, torch.Tensor) else absolute.values).flatten(2)
    # (a leading part of every row holding ``length`` nonzeros already settles it: no count
    # over whole rows, which cost a full pass over the coefficients at every weighted node)
    part = COUNT_PROBE * length
    if part < values.shape[-1]:
        nonzero = _nonzeros(values[..., :part])
        short = nonzero < length
        if not bool(short.any()):
            return None
        # the rest of the rows the probe left short (e.g. neurons whose fields lie late in
        # the value), the others keep their probe's count (>= length: the same factor 1);
        # when most are short, whole rows in one pass rather than a copy of the short ones
        # (rows of a Conv right behind a pool, each a few cells somewhere in the value)
        if 2 * int(short.sum()) > short.numel():
            nonzero = _nonzeros(values)
        else:
            nonzero[short] += _nonzeros(values[short][..., part:])
    else:
        nonzero = _nonzeros(values)
    if float(nonzero.min()) >= length:
        return None
    n = nonzero.clamp(max=length) + 3
    return (n * U32 / (1 - n * U32)) / gamma(length + 3)


def _nonzeros(absolute: torch.Tensor) -> torch.Tensor:
    """Nonzero entries per row of ``absolute`` (>= 0, finite: the range check before a
    float32 step), as float64: the sum of their signs, exact below 2**53 entries, and 2-3
    times faster on CPU than count_nonzero or a summed mask (one thread: 12 vs 25 ms on
    259 x 24576 entries)."""
    return absolute.detach().sign().sum(-1, dtype=torch.float64)


def work_cast(node: Node, coef: torch.Tensor, work: torch.dtype) -> torch.Tensor:
    """``coef`` [..., C, H, W] in the ``work`` dtype of ``node``'s adjoint, cast straight into
    channels-last layout where its transposed convolution runs the channels-last kernel
    (``linear.channels_last_kernel``: the cast and the kernel's layout change in one copy;
    the same numbers)."""
    if node.op != "Conv" or coef.dim() < 4 or not channels_last_kernel(
            node.consts[1].shape, tuple(int(s) for s in node.attrs["strides"]),
            int(node.attrs["group"]), work):
        return coef.to(work)
    flat = coef.reshape(-1, *coef.shape[-3:])
    return flat.to(work, memory_format=torch.channels_last).reshape(coef.shape)
