"""Conv, ConvTranspose (constant weights) and BatchNormalization (inference form).

Padding is resolved here (auto_pad -> explicit ONNX-ordered pads) so the IR carries only
``pads``, ``strides``, ``dilations``, ``group`` (and ``output_padding`` for ConvTranspose).
BatchNormalization becomes Mul + Add by per-channel constants; the IR passes fold them into a
preceding Conv/Linear when possible.
"""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.registry import converter


def resolve_pads(ctx, node, in_sizes, kernel, strides, dilations) -> list[int]:
    """Explicit begin/end pads for ``auto_pad`` (SAME_UPPER/SAME_LOWER/VALID/NOTSET)."""
    n = len(in_sizes)
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = ctx.attr(node, "pads") or [0] * (2 * n)
        return [int(p) for p in pads]
    if auto == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin + end


def _conv_common(ctx, node, x: Dyn, kernel):
    spatial = len(kernel)
    if x.rank != spatial + 2:
        raise ModelError(f"{node.op_type} node {node.name!r}: input rank {x.rank} does not match"
                         f" a {spatial}-d kernel")
    strides = [int(s) for s in ctx.attr(node, "strides") or [1] * spatial]
    dilations = [int(d) for d in ctx.attr(node, "dilations") or [1] * spatial]
    return strides, dilations


def _weights(ctx, node):
    w = ctx.value(node.input[1])
    if isinstance(w, Dyn):
        raise unsupported(node, "input-dependent weights")
    b = ctx.optional(node, 2)
    if isinstance(b, Dyn):
        raise unsupported(node, "an input-dependent bias")
    w = np.asarray(w, dtype=np.float32)
    return w, None if b is None else np.asarray(b, dtype=np.float32).reshape(-1)


@converter("Conv", 1)
def conv(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    w, b = _weights(ctx, node)
    kernel = list(w.shape[2:])
    strides, dilations = _conv_common(ctx, node, x, kernel)
    group = int(ctx.attr(node, "group", 1))
    if x.shape[1] != w.shape[1] * group:
        raise ModelError(f"Conv node {node.name!r}: {x.shape[1]} input channels, weight expects"
                         f" {w.shape[1] * group}")
    pads = resolve_pads(ctx, node, x.shape[2:], kernel, strides, dilations)
    n = len(kernel)
    out = [(size + pads[i] + pads[i + n] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
           for i, size in enumerate(x.shape[2:])]
    attrs = {"strides": tuple(strides), "dilations": tuple(dilations), "group": group,
             "pads": tuple(pads)}
    shape = (x.shape[0], w.shape[0], *out)
    ctx.bind(node.output[0], ctx.emit("Conv", [x, w, b], shape, attrs, hint="conv"))


converter("Conv", 11)(conv)


@converter("ConvTranspose", 1)
def conv_transpose(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    w, b = _weights(ctx, node)
    kernel = list(w.shape[2:])
    n = len(kernel)
    strides, dilations = _conv_common(ctx, node, x, kernel)
    group = int(ctx.attr(node, "group", 1))
    extra = [int(e) for e in ctx.attr(node, "output_padding") or [0] * n]
    full = [strides[i] * (size - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
            for i, size in enumerate(x.shape[2:])]
    out_shape = ctx.attr(node, "output_shape")
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    if out_shape is not None:
        out_shape = [int(d) for d in out_shape][-n:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [size * strides[i] for i, size in enumerate(x.shape[2:])]
    if out_shape is not None:
        total = [f - o for f, o in zip(full, out_shape, strict=True)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        pads = begin + [t - bg for t, bg in zip(total, begin, strict=True)]
    else:
        pads = [int(p) for p in ctx.attr(node, "pads") or [0] * (2 * n)]
        if auto == "VALID":
            pads = [0] * (2 * n)
    out = [full[i] - pads[i] - pads[i + n] for i in range(n)]
    attrs = {"strides": tuple(strides), "dilations": tuple(dilations), "group": group,
             "pads": tuple(pads), "output_padding": tuple(extra)}
    shape = (x.shape[0], w.shape[1] * group, *out)
    ctx.bind(node.output[0], ctx.emit("ConvTranspose", [x, w, b], shape, attrs, hint="convt"))


converter("ConvTranspose", 11)(conv_transpose)


@converter("BatchNormalization", 1)
def batch_norm(ctx: ConvertContext, node) -> None:
    """y = scale * (x - mean) / sqrt(var + eps) + bias = a * x + c, per channel (axis 1)."""
    x = ctx.value(node.input[0])
    scale, bias, mean, var = (np.asarray(ctx.const(n, f"BatchNormalization {node.name!r}"),
                                         dtype=np.float64) for n in node.input[1:5])
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    a = scale / np.sqrt(var + eps)
    c = bias - mean * a
    bshape = (1, -1) + (1,) * (x.rank - 2)
    y = emit_broadcast(ctx, "Mul", [x, a.astype(np.float32).reshape(bshape)])
    ctx.bind(node.output[0], emit_broadcast(ctx, "Add", [y, c.astype(np.float32).reshape(bshape)]))


for _version in (6, 7, 9, 14, 15):
    converter("BatchNormalization", _version)(batch_norm)
