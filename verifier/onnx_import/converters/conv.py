"""Conv, ConvTranspose (constant weights), Col2Im (a ConvTranspose with one-hot weights) and
BatchNormalization (inference form).

Padding is resolved here (auto_pad -> explicit ONNX-ordered pads) so the IR carries only
``pads``, ``strides``, ``dilations``, ``group`` (and ``output_padding`` for ConvTranspose).
BatchNormalization becomes Mul + Add by per-channel constants; the IR passes fold them into a
preceding Conv/Linear when possible. Input-dependent statistics (tf2onnx's LayerNormalization)
take the centred form with the runtime's rounding stated (``_statistics_batch_norm``).
"""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of, unsupported
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
    if n > MAX_CONV_AXES:
        ctx.bind(node.output[0], _conv_folding_unit_axes(ctx, node, x, w, b, attrs, shape))
        return
    ctx.bind(node.output[0], ctx.emit("Conv", [x, w, b], shape, attrs, hint="conv"))


converter("Conv", 11)(conv)

# Spatial axes the IR's Conv takes (torch's 1-, 2- and 3-D convolutions).
MAX_CONV_AXES = 3


def _conv_folding_unit_axes(ctx: ConvertContext, node, x: Dyn, w: np.ndarray, b, attrs: dict,
                            shape: tuple) -> Dyn:
    """A Conv over more spatial axes than the IR takes, where the extra axes have a unit
    kernel (size, stride, dilation 1, no padding): jax2onnx writes a window sum over NCHW so,
    unsqueezed to 4 spatial axes with a [1, 1, k, k] kernel. Such an axis acts as a batch:
    its U positions are moved before the channels and merged with them, and the convolution
    runs with U times the groups and its weights tiled U times; a kernel over more than
    ``MAX_CONV_AXES`` axes is refused by name."""
    n = x.rank - 2
    unit = [i for i in range(n) if w.shape[2 + i] == 1 and attrs["strides"][i] == 1
            and attrs["dilations"][i] == 1 and attrs["pads"][i] == 0
            and attrs["pads"][i + n] == 0]
    kept = [i for i in range(n) if i not in unit] or [unit.pop()]
    if len(kept) > MAX_CONV_AXES:
        raise unsupported(node, f"a kernel over {len(kept)} spatial axes (at most "
                                f"{MAX_CONV_AXES})")
    copies = int(np.prod([x.shape[2 + i] for i in unit]))
    perm = (0, *(2 + i for i in unit), 1, *(2 + i for i in kept))
    moved = ctx.emit("Transpose", [x], tuple(x.shape[p] for p in perm), {"perm": perm})
    flat = ctx.emit("Reshape", [moved], (x.shape[0], copies * x.shape[1],
                                         *(x.shape[2 + i] for i in kept)))
    kernel = w.reshape(w.shape[0], w.shape[1], *(w.shape[2 + i] for i in kept))
    tiled = np.tile(kernel, (copies,) + (1,) * (kernel.ndim - 1))
    bias = None if b is None else np.tile(b, copies)
    picked = {key: tuple(attrs[key][i] for i in kept) for key in ("strides", "dilations")}
    picked["pads"] = (tuple(attrs["pads"][i] for i in kept)
                      + tuple(attrs["pads"][i + n] for i in kept))
    picked["group"] = attrs["group"] * copies
    out = (x.shape[0], copies * w.shape[0], *(shape[2 + i] for i in kept))
    y = ctx.emit("Conv", [flat, tiled, bias], out, picked, hint="conv")
    unflat = ctx.emit("Reshape", [y], (x.shape[0], *(x.shape[2 + i] for i in unit), w.shape[0],
                                       *(shape[2 + i] for i in kept)))
    return ctx.emit("Transpose", [unflat], shape,
                    {"perm": tuple(int(i) for i in np.argsort(perm))})


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


@converter("Col2Im", 18)
def col2im(ctx: ConvertContext, node) -> None:
    """Sliding blocks summed back into an image (torch's fold; MobileViTV2): [N, C k, L] with
    k = prod(block_shape) entries per block and L blocks -> [N, C, *image_shape]. A
    ConvTranspose of the blocks laid out on their grid, whose one-hot weights put entry
    (c, offset) at that offset of channel c (group C), with the blocks' strides and
    dilations, the pads cropped and the image's far end reached by output padding."""
    x = ctx.value(node.input[0])
    image, block = (ctx.value(node.input[i]) for i in (1, 2))
    if isinstance(image, Dyn) or isinstance(block, Dyn):
        raise unsupported(node, "an input-dependent image or block shape")
    image, block = [int(v) for v in np.ravel(image)], [int(v) for v in np.ravel(block)]
    n, k = len(block), int(np.prod(block))
    strides = [int(v) for v in ctx.attr(node, "strides") or [1] * n]
    dilations = [int(v) for v in ctx.attr(node, "dilations") or [1] * n]
    pads = [int(v) for v in ctx.attr(node, "pads") or [0] * (2 * n)]
    if x.rank != 3 or len(image) != n or x.shape[1] % k:
        raise ModelError(f"Col2Im node {node.name!r}: input {x.shape} does not hold blocks of "
                         f"{block} for an image {image}")
    grid = [(image[i] + pads[i] + pads[i + n] - dilations[i] * (block[i] - 1) - 1)
            // strides[i] + 1 for i in range(n)]
    if int(np.prod(grid)) != x.shape[2] or min(grid) < 1:
        raise ModelError(f"Col2Im node {node.name!r}: {x.shape[2]} blocks, but the image "
                         f"{image} holds {grid}")
    channels = x.shape[1] // k
    # entry j of a block (row-major offsets) lands at offset j: an identity per channel
    weight = np.tile(np.eye(k, dtype=np.float32), (channels, 1)).reshape(channels * k, 1, *block)
    full = [strides[i] * (grid[i] - 1) + dilations[i] * (block[i] - 1) + 1 for i in range(n)]
    extra = [image[i] - (full[i] - pads[i] - pads[i + n]) for i in range(n)]
    laid = ctx.emit("Reshape", [x], (x.shape[0], x.shape[1], *grid))
    attrs = {"strides": tuple(strides), "dilations": tuple(dilations), "group": channels,
             "pads": tuple(pads), "output_padding": tuple(extra)}
    shape = (x.shape[0], channels, *image)
    ctx.bind(node.output[0], ctx.emit("ConvTranspose", [laid, weight, None], shape, attrs,
                                      hint="convt"))


@converter("BatchNormalization", 1)
def batch_norm(ctx: ConvertContext, node) -> None:
    """y = scale * (x - mean) / sqrt(var + eps) + bias = a * x + c, per channel (axis 1)."""
    x = ctx.value(node.input[0])
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    if ctx.attr(node, "training_mode", 0):
        raise unsupported(node, "training_mode 1 (statistics of the batch)")
    if any(isinstance(ctx.value(n), Dyn) for n in node.input[1:5]):
        ctx.bind(node.output[0], _statistics_batch_norm(ctx, node, x, eps))
        return
    scale, bias, mean, var = (np.asarray(ctx.const(n, f"BatchNormalization {node.name!r}"),
                                         dtype=np.float64) for n in node.input[1:5])
    a = scale / np.sqrt(var + eps)
    c = bias - mean * a
    bshape = (1, -1) + (1,) * (x.rank - 2)
    y = emit_broadcast(ctx, "Mul", [x, a.astype(np.float32).reshape(bshape)])
    ctx.bind(node.output[0], emit_broadcast(ctx, "Add", [y, c.astype(np.float32).reshape(bshape)]))


# onnxruntime's float32 y = x ns + (bias - mean ns), ns = scale / sqrt(var + eps), against the
# exact (x - mean) ns + bias for the same ns, x, mean, bias: its products x ns and mean ns, the
# difference and the sum round once each (twice for the products, counting the rounding of ns
# into them), within 2u |x ns| + 4u |mean ns| + 2u |bias| to first order; with |x ns| <=
# |z| + |bias| + |mean ns| (z the exact output) that is 2u |z| + 6u |mean ns| + 4u |bias|,
# which two Slacks of relative 8u cover: 8u (|z| + |mean ns|) + 8u (|z'| + |bias|), z' ~ z.
_STATISTICS_SLACK = 8 * 2.0**-24


def _statistics_batch_norm(ctx: ConvertContext, node, x: Dyn, eps: float) -> Dyn:
    """BatchNormalization whose statistics (or scale, bias) depend on the input: tf2onnx
    writes Keras' LayerNormalization so, as a BatchNormalization of the reshaped values whose
    mean and variance are ReduceMean and ReduceSumSquare nodes of them. Bounds follow the
    centred form (x - mean) ns + bias, where x and mean keep their dependence; the runtime's
    fused form rounds differently, stated by two Slack nodes (``_STATISTICS_SLACK``). A
    Relu guards var + eps as in ``composite._normalize``: the identity wherever the runtime's
    square root is a number."""
    channel = (1, x.shape[1]) + (1,) * (x.rank - 2)
    scale, bias, mean, var = (_per_channel(ctx, node, ctx.value(n), channel)
                              for n in node.input[1:5])
    if isinstance(var, Dyn):
        shifted = emit_broadcast(ctx, "Add", [var, np.float32(eps)])
        guarded = ctx.emit("Relu", [shifted], shifted.shape)
        root = ctx.emit("Sqrt", [guarded], guarded.shape)
        inverse = ctx.emit("Reciprocal", [root], root.shape)
    else:
        inverse = (1.0 / np.sqrt(np.float32(var) + np.float32(eps))).astype(np.float32)
    factor = (emit_broadcast(ctx, "Mul", [inverse, scale])
              if isinstance(inverse, Dyn) or isinstance(scale, Dyn)
              else (inverse * scale).astype(np.float32))
    centred = emit_broadcast(ctx, "Sub", [x, mean])
    exact = emit_broadcast(ctx, "Add", [emit_broadcast(ctx, "Mul", [centred, factor]), bias])
    shifted_mean = emit_broadcast(ctx, "Mul", [mean, factor])
    attrs = {"relative": _STATISTICS_SLACK}
    stated = emit_broadcast(ctx, "Slack", [exact, shifted_mean], attrs)
    return emit_broadcast(ctx, "Slack", [stated, bias], attrs)


def _per_channel(ctx: ConvertContext, node, value, channel: tuple) -> object:
    """A [C] statistic (or scale, bias) shaped to broadcast over axis 1."""
    if np.prod(shape_of(value)) != channel[1] or len(shape_of(value)) != 1:
        raise ModelError(f"BatchNormalization {node.name!r}: a statistic of shape "
                         f"{shape_of(value)} for {channel[1]} channels")
    if isinstance(value, Dyn):
        return ctx.emit("Reshape", [value], channel)
    return np.asarray(value, dtype=np.float32).reshape(channel)


for _version in (6, 7, 9, 14, 15):
    converter("BatchNormalization", _version)(batch_norm)
