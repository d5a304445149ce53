"""Affine ops with weights: Linear, Conv, ConvTranspose, MatMul.

Linear: y = x W^T + b over the last axis; W is consts[1] with shape [out, in], b is consts[2].
Conv / ConvTranspose: y = W * x + b (cross-correlation / its transpose); W is consts[1], b is
consts[2]; attrs ``strides``, ``dilations``, ``group`` and ONNX-ordered ``pads`` (begins then
ends; asymmetric pads are applied explicitly), ConvTranspose also ``output_padding``.
Their backward steps are the exact adjoints of the linear parts: Conv's is the transposed
convolution of the coefficients cropped to the input, ConvTranspose's the convolution of the
coefficients re-padded to the uncropped output; each bias adds A . b.
IBP for all weighted ops: centre/radius form, y in [W c + b - |W| r, W c + b + |W| r]; exact for
a box because each output is a fixed linear form of the input.
MatMul: torch.matmul with numpy broadcasting; it is affine (IBP centre/radius with |M|) when one
operand is a constant (traits.affine=True holds only then, see
``bounds.rules.arithmetic.node_is_affine``); with two dynamic operands
IBP uses the interval product of each term (sound, elementwise min/max of the four products)
and CROWN relaxes every product a_ik b_kj by McCormick planes (``bounds.rules.bilinear``); with
one constant operand the backward declines and the engine uses the vector-Jacobian product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bounds.float32_upper import nonneg_sum_upper
from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.rules.bilinear import PRODUCT_ALPHA, PRODUCT_SPLIT, matmul_backward
from bounds.rules.common import AFFINE_FIELDS, static_shape, sum_to_batch_spec
from bounds.types import Interval

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
# A strided 2-D transposed convolution onto at most this many channels runs as one stride-1
# convolution over its phases (``_phase_transpose``, where the kernel's sides are multiples of
# the strides) or as a matrix product and a col2im (``F.fold``): torch's float32
# conv_transpose2d vectorises badly there (resnet_4b's first Conv, 16 -> 3 channels at stride
# 2: 52 vs 35 ms on 646 rows, one thread).
FOLD_MAX_CHANNELS = 4


def _linear_forward(node, args):
    x, w = args[0], args[1]
    y = x @ w.transpose(-1, -2)
    return y + args[2] if len(args) > 2 and args[2] is not None else y


def _linear_ibp(node, args):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    center = x.center @ w.transpose(-1, -2)
    radius = nonneg_sum_upper(lambda ops: ops[0] @ ops[1].transpose(-1, -2),
                              [x.radius, w.abs()], w.shape[-1], center.numel())
    if bias is not None:
        center = center + bias
    return Interval(center - radius, center + radius)


def _linear_backward(node, coef, args):
    w = args[1]
    bias = args[2] if len(args) > 2 else None
    offset = None
    if bias is not None:
        # a matrix-vector product where the bias is one vector (no [B, S, ...] temporary)
        offset = sum_to_batch_spec(coef @ bias if bias.dim() == 1 else coef * bias)
    return [coef @ w, None, None][: len(args)], offset


def _merge(x: torch.Tensor, spatial: int) -> torch.Tensor:
    """[B, *lead, C, *spatial] -> [B * prod(lead), C, *spatial] for torch's conv functions."""
    return x.reshape(-1, *x.shape[x.dim() - spatial - 1:])


def _split(y: torch.Tensor, batch: int, shape) -> torch.Tensor:
    return y.reshape(batch, *shape)


def _pad_explicit(x: torch.Tensor, pads, value: float = 0.0) -> torch.Tensor:
    """Apply ONNX-ordered pads (x1_begin, x2_begin, ..., x1_end, ...) to the trailing axes."""
    n = len(pads) // 2
    if not any(pads):
        return x
    torch_pads: list[int] = []
    for i in reversed(range(n)):
        torch_pads += [int(pads[i]), int(pads[i + n])]
    return F.pad(x, torch_pads, value=value)


def _conv_forward(node, args, bias=True):
    x, w = args[0], args[1]
    spatial = w.dim() - 2
    a = node.attrs
    xm = _pad_explicit(_merge(x, spatial), a["pads"])
    y = _CONV[spatial](xm, w, args[2] if bias and len(args) > 2 else None,
                       stride=tuple(a["strides"]), dilation=tuple(a["dilations"]),
                       groups=int(a["group"]))
    return _split(y, x.shape[0], node.shape)


def _conv_t_forward(node, args, bias=True):
    x, w = args[0], args[1]
    spatial = w.dim() - 2
    a = node.attrs
    y = _CONV_T[spatial](_merge(x, spatial), w, None, stride=tuple(a["strides"]),
                         dilation=tuple(a["dilations"]), groups=int(a["group"]))
    # Output padding adds zeros at the end, then the ONNX pads crop from both ends.
    pads, extra = a["pads"], a["output_padding"]
    y = _pad_explicit(y, [0] * spatial + [int(e) for e in extra])
    for i in range(spatial):
        axis = 2 + i
        size = node.shape[len(node.shape) - spatial + i]
        y = y.narrow(axis, int(pads[i]), size)
    if bias and len(args) > 2 and args[2] is not None:
        y = y + args[2].reshape(-1, *([1] * spatial))
    return _split(y, x.shape[0], node.shape)


def _bias_offset(coef: torch.Tensor, bias, spatial: int) -> torch.Tensor | None:
    """sum over positions of coef [B, S, *lead, C, *sp] * bias[C] ([B, S]; None: no bias)."""
    if bias is None or isinstance(bias, Interval):
        return None
    per_channel = coef.sum(dim=tuple(range(coef.dim() - spatial, coef.dim())))
    return sum_to_batch_spec(per_channel @ bias.reshape(-1))


def _conv_backward(node, coef, args):
    """A -> A W^T: the transposed convolution of the coefficients (no forward recomputation),
    cropped to the input (padding cells drop); the bias adds A . b. Exact: this is the
    adjoint of the linear part of ``_conv_forward``."""
    w = args[1]
    if isinstance(w, Interval) or len(node.dynamic_inputs) != 1:
        return None, None  # a dynamic weight: not affine (the engine concretises)
    spatial, a = w.dim() - 2, node.attrs
    in_shape = static_shape(args[0])
    grad = conv_input_coef(coef.reshape(-1, *coef.shape[coef.dim() - spatial - 1:]), w,
                           in_shape[len(in_shape) - spatial:], a)
    offset = _bias_offset(coef, args[2] if len(args) > 2 else None, spatial)
    return [grad.reshape(*coef.shape[:2], *in_shape), None, None][: len(args)], offset


def conv_input_coef(coef: torch.Tensor, w: torch.Tensor, in_sp, attrs) -> torch.Tensor:
    """[N, Cout, *out_sp] coefficients on a Conv's output -> [N, Cin, *in_sp] on its input."""
    spatial = w.dim() - 2
    pads, strides, dil = attrs["pads"], attrs["strides"], attrs["dilations"]
    out_sp = coef.shape[2:]
    begin = [int(pads[i]) for i in range(spatial)]
    extra = []  # per axis: input cells after the last one a window reaches, minus pads' excess
    for i in range(spatial):
        span = int(dil[i]) * (w.shape[2 + i] - 1) + 1
        used = (out_sp[i] - 1) * int(strides[i]) + span
        extra.append(begin[i] + in_sp[i] - used)
    common = {"stride": tuple(int(s) for s in strides), "groups": int(attrs["group"]),
              "dilation": tuple(int(d) for d in dil)}
    if all(0 <= e + b < max(s, d) and b >= 0
           for e, b, s, d in zip(extra, begin, common["stride"], common["dilation"],
                                 strict=True)):
        # torch crops ``begin`` cells at both ends, then adds output_padding at the end
        return conv_transpose(coef, w, padding=tuple(begin),
                              output_padding=tuple(e + b for e, b in zip(extra, begin,
                                                                            strict=True)),
                              **common)
    full = conv_transpose(coef, w, **common)
    torch_pads: list[int] = []
    for i in reversed(range(spatial)):
        torch_pads += [-begin[i], extra[i]]
    return F.pad(full, torch_pads)


def channels_last_kernel(w: torch.Tensor | tuple, stride: tuple, groups: int,
                         dtype: torch.dtype) -> bool:
    """Whether ``conv_transpose`` runs torch's channels-last kernel for weights ``w`` (or
    their shape): a caller that casts its coefficients to float32 anyway may cast them
    straight into that layout (``conv_transpose`` then keeps it: one copy each way less)."""
    shape = tuple(w.shape) if isinstance(w, torch.Tensor) else tuple(w)
    return (len(shape) == 4 and dtype == torch.float32 and max(stride) > 1
            and not (groups == 1 and shape[1] <= FOLD_MAX_CHANNELS)
            and not _pointwise(shape, stride, groups, dtype))


def _pointwise(shape: tuple, stride: tuple, groups: int, dtype: torch.dtype) -> bool:
    """A strided float32 2-D transposed convolution with a 1 x 1 kernel (a ResNet's strided
    shortcut): one matrix product written at every stride-th cell."""
    return (len(shape) == 4 and dtype == torch.float32 and max(stride) > 1 and groups == 1
            and shape[2] == 1 and shape[3] == 1)


def conv_transpose(x: torch.Tensor, w: torch.Tensor, *, stride: tuple, dilation: tuple,
                   groups: int, padding: tuple | None = None,
                   output_padding: tuple | None = None) -> torch.Tensor:
    """torch's conv_transpose{1,2,3}d of ``x`` [N, Cin, *sp] with weights ``w`` (no bias).
    A strided float32 2-D one takes the channels-last kernel (its output channels-last when
    ``x`` is given so, else contiguous), with a 1 x 1 kernel and no padding a matrix product
    W^T x written at every stride-th cell of zeros, or onto at most FOLD_MAX_CHANNELS
    channels the phase form (``_phase_transpose``: kernel sides multiples of the strides, no
    dilation) or else the im2col form: cols = W^T x per cell, then col2im sums the
    overlapping cells (``F.fold``). Each output entry is still a sum of the same products
    (and exact zeros), in another order: the error bounds that hold for any summation order
    (``adjoint_precision``) hold for all of them."""
    spatial = w.dim() - 2
    padding = padding or (0,) * spatial
    output_padding = output_padding or (0,) * spatial
    strided32 = spatial == 2 and x.dtype == torch.float32 and max(stride) > 1
    if (strided32 and _pointwise(tuple(w.shape), stride, groups, x.dtype) and not any(padding)
            and all(0 <= o < s for o, s in zip(output_padding, stride, strict=True))):
        return _pointwise_transpose(x, w, stride, output_padding)
    if not (strided32 and groups == 1 and w.shape[1] <= FOLD_MAX_CHANNELS):
        # strided float32: the channels-last kernel (646 rows 32 -> 16 channels, 8x8 at
        # stride 2: 29 vs 44 ms with the layout changes, one thread; no gain at stride 1)
        keep = strided32 and not x.is_contiguous()
        y = _CONV_T[spatial](x.contiguous(memory_format=torch.channels_last) if strided32
                             else x, w, None, stride=stride, padding=padding,
                             output_padding=output_padding, dilation=dilation, groups=groups)
        return y if keep and y.is_contiguous(memory_format=torch.channels_last) else (
            y.contiguous())
    n, c_in, kernel = x.shape[0], w.shape[0], tuple(w.shape[2:])
    size = tuple((x.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                 + dilation[i] * (kernel[i] - 1) + output_padding[i] + 1 for i in range(2))
    if _phases_fit(kernel, stride, dilation):
        return _phase_transpose(x, w, stride, padding, size)
    cols = torch.matmul(w.reshape(c_in, -1).t(), x.reshape(n, c_in, -1))
    return F.fold(cols, size, kernel, dilation=dilation, padding=padding, stride=stride)


def _phases_fit(kernel: tuple, stride: tuple, dilation: tuple) -> bool:
    """Whether ``_phase_transpose`` applies: no dilation, each kernel side a multiple of its
    stride (a 3 x 3 kernel at stride 2 would take a 4 x 4 one, 78% more products: slower
    than the col2im form)."""
    return all(d == 1 for d in dilation) and all(
        k % s == 0 for k, s in zip(kernel, stride, strict=True))


def _phase_transpose(x: torch.Tensor, w: torch.Tensor, stride: tuple, padding: tuple,
                     size: tuple) -> torch.Tensor:
    """conv_transpose2d of ``x`` [N, Cin, H, W] with ``w`` [Cin, Cout, K0, K1] (K a multiple
    of the stride s, no dilation) as one stride-1 convolution and a pixel shuffle: output
    cell s q + a (per axis) collects the taps s j + a of the kernel, so phase a is the full
    correlation of ``x`` with those taps flipped; the s0 s1 phases are output channels of one
    ``conv2d`` (weights [Cout s0 s1, Cin, K0/s0, K1/s1]) that ``pixel_shuffle`` interleaves,
    then the padding cells are cropped (and cells past the last tap, output padding, are 0).
    Each output entry sums the same products as torch's kernel (the col2im form's backward,
    an im2col, dominated oval21's searches: 8 -> 3 channels, 4 x 4 at stride 2, 700 rows:
    forward and backward 27 vs 40 ms, one thread)."""
    (s0, s1), (k0, k1) = stride, w.shape[2:]
    c_in, c_out, q0, q1 = w.shape[0], w.shape[1], k0 // s0, k1 // s1
    taps = w.reshape(c_in, c_out, q0, s0, q1, s1).permute(1, 3, 5, 0, 2, 4).flip(4, 5)
    phases = F.conv2d(x, taps.reshape(c_out * s0 * s1, c_in, q0, q1), padding=(q0 - 1, q1 - 1))
    y = F.pixel_shuffle(phases, s0) if s0 == s1 else _shuffle(phases, s0, s1)
    (p0, p1), (n0, n1) = padding, size
    short = (max(0, p0 + n0 - y.shape[2]), max(0, p1 + n1 - y.shape[3]))
    if any(short):  # output padding past the kernel's reach: zero cells
        y = F.pad(y, (0, short[1], 0, short[0]))
    return y[:, :, p0:p0 + n0, p1:p1 + n1]


def _shuffle(y: torch.Tensor, s0: int, s1: int) -> torch.Tensor:
    """``pixel_shuffle`` with strides s0 != s1: [N, C s0 s1, H, W] -> [N, C, H s0, W s1]."""
    n, c, h, wd = y.shape
    c //= s0 * s1
    return y.reshape(n, c, s0, s1, h, wd).permute(0, 1, 4, 2, 5, 3).reshape(
        n, c, h * s0, wd * s1)


def _pointwise_transpose(x: torch.Tensor, w: torch.Tensor, stride: tuple,
                         output_padding: tuple) -> torch.Tensor:
    """conv_transpose2d of ``x`` [N, Cin, H, W] with a 1 x 1 kernel ``w`` [Cin, Cout, 1, 1],
    no padding: y[:, :, i s0, j s1] = W^T x[:, :, i, j], every other cell 0 (output padding
    < stride adds zero cells at the end). 646 rows 32 -> 16 channels, 8 x 8 at stride 2: 5.5
    vs 12.7 ms with torch's kernel, one thread."""
    n, c_in, h, wd = x.shape
    c_out, (s0, s1) = w.shape[1], stride
    y = x.new_zeros((n, c_out, h, s0, wd, s1))
    prod = torch.matmul(w.reshape(c_in, c_out).t(), x.reshape(n, c_in, h * wd))
    y[:, :, :, 0, :, 0] = prod.reshape(n, c_out, h, wd)
    y = y.reshape(n, c_out, h * s0, wd * s1)
    return y[:, :, : (h - 1) * s0 + 1 + output_padding[0],
             : (wd - 1) * s1 + 1 + output_padding[1]].contiguous()


def _conv_t_backward(node, coef, args):
    """A -> the convolution of A (re-padded to the uncropped transposed output) with W: the
    adjoint of ``_conv_t_forward``'s linear part; output-padding cells are constant zeros
    and drop. The bias adds A . b."""
    w = args[1]
    if isinstance(w, Interval) or len(node.dynamic_inputs) != 1:
        return None, None
    spatial, a = w.dim() - 2, node.attrs
    in_shape = static_shape(args[0])
    in_sp = in_shape[len(in_shape) - spatial:]
    cm = coef.reshape(-1, *coef.shape[coef.dim() - spatial - 1:])
    torch_pads: list[int] = []
    for i in reversed(range(spatial)):
        span = int(a["dilations"][i]) * (w.shape[2 + i] - 1) + 1
        full = (in_sp[i] - 1) * int(a["strides"][i]) + span
        begin = int(a["pads"][i])
        torch_pads += [begin, full - begin - cm.shape[2 + i]]
    grad = _CONV[spatial](F.pad(cm, torch_pads), w, None, stride=tuple(a["strides"]),
                          dilation=tuple(a["dilations"]), groups=int(a["group"]))
    offset = _bias_offset(coef, args[2] if len(args) > 2 else None, spatial)
    return [grad.reshape(*coef.shape[:2], *in_shape), None, None][: len(args)], offset


def strided_taps(kernel, strides, dilations) -> int:
    """Most kernel taps that meet one position of a strided transpose (a ConvTranspose's
    outputs, a Conv's adjoint): along each axis the taps j with j d = r (mod s) for one r,
    at most ceil(k / (s / gcd(s, d)))."""
    strides = strides or (1,) * len(kernel)
    dilations = dilations or (1,) * len(kernel)
    return math.prod(-(-int(k) // (int(s) // math.gcd(int(s), int(d))))
                     for k, s, d in zip(kernel, strides, dilations, strict=True))


# Ops with a weight operand (consts[1]) whose outputs are sums of products with it.
WEIGHTED_OPS = frozenset({"Linear", "Conv", "ConvTranspose"})


def forward_products(op: str, w_shape, attrs) -> int:
    """Most products one output of a Linear, Conv or ConvTranspose sums (weights [out, in],
    [Cout, Cin/g, *k] and [Cin, Cout/g, *k]): the reduction length of its rounding error and
    of its cost. A ConvTranspose output sums Cin/g channels times the taps its stride lets
    meet it, not Cout x Cin x k (which priced a generator's layers 32x too high)."""
    if op == "Linear":
        return int(w_shape[1])
    if op == "Conv":
        return math.prod(int(s) for s in w_shape[1:])
    groups = int(attrs.get("group", 1))
    return int(w_shape[0]) // groups * strided_taps(
        w_shape[2:], attrs.get("strides"), attrs.get("dilations"))


def _weighted_ibp(forward):
    """Centre/radius IBP for y = W x + b where ``forward(node, args, bias)`` applies W."""

    def ibp(node, args):
        x = args[0]
        center = forward(node, [x.center, *args[1:]], True)
        radius = nonneg_sum_upper(lambda ops: forward(node, list(ops), False),
                                  [x.radius, args[1].abs()],
                                  forward_products(node.op, args[1].shape, node.attrs),
                                  center.numel())
        return Interval(center - radius, center + radius)

    return ibp


def _matmul_forward(node, args):
    return torch.matmul(args[0], args[1])


def _matmul_ibp(node, args):
    a, b = args
    if not isinstance(a, Interval) and not isinstance(b, Interval):
        out = torch.matmul(a, b)
        return Interval(out, out)
    if not isinstance(a, Interval):  # constant left: y = M x
        c = torch.matmul(a, b.center)
        r = torch.matmul(a.abs(), b.radius)
        return Interval(c - r, c + r)
    if not isinstance(b, Interval):  # constant right: y = x M
        c = torch.matmul(a.center, b)
        r = torch.matmul(a.radius, b.abs())
        return Interval(c - r, c + r)
    # Both dynamic: sum over k of interval products a[..., i, k] * b[..., k, j].
    al, au = a.lower.unsqueeze(-1), a.upper.unsqueeze(-1)
    bl, bu = b.lower.unsqueeze(-3), b.upper.unsqueeze(-3)
    prods = torch.stack([al * bl, al * bu, au * bl, au * bu])
    return Interval(prods.amin(0).sum(-2), prods.amax(0).sum(-2))


def _matmul_backward(node, coef, args, alpha=None):
    """Two dynamic operands: McCormick; one: decline, so the engine takes the exact VJP."""
    if len(node.dynamic_inputs) != 2:
        return None, None
    return matmul_backward(node, coef, args, alpha)


_DOT = {**AFFINE_FIELDS, "rounding": Rounding.DOT}
RULES = (
    OpRule("Linear", forward=_linear_forward, ibp=_linear_ibp, backward=_linear_backward,
           traits=OpTraits(affine=True), doc="y = x W^T + b over the last axis", **_DOT),
    OpRule("Conv", forward=lambda n, a: _conv_forward(n, a), ibp=_weighted_ibp(_conv_forward),
           backward=_conv_backward, traits=OpTraits(affine=True),
           doc="y = W * x + b (N-d cross-correlation)", **_DOT),
    OpRule("ConvTranspose", forward=lambda n, a: _conv_t_forward(n, a),
           ibp=_weighted_ibp(_conv_t_forward), backward=_conv_t_backward,
           traits=OpTraits(affine=True),
           doc="y = W^T * x + b (transposed convolution)", **_DOT),
    OpRule("MatMul", forward=_matmul_forward, ibp=_matmul_ibp, traits=OpTraits(affine=True),
           backward=_matmul_backward,
           doc="y = a @ b (affine when one operand is constant)",
           alpha=PRODUCT_ALPHA, rounding=Rounding.DOT, split=PRODUCT_SPLIT,
           milp=Milp("affine")),
)
