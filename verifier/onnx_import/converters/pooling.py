"""Pooling, padding, resizing and reductions: AveragePool, MaxPool, GlobalAveragePool,
GlobalMaxPool, Pad, Resize and Upsample (nearest), ReduceSum/ReduceMean/ReduceMax.

Output sizes follow the ONNX formulas; ceil_mode is turned into ``extra`` end padding so that
every window of the IR op is complete (see bounds/rules/pooling.py).
"""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis, unsupported
from verifier.onnx_import.converters.conv import resolve_pads
from verifier.onnx_import.converters.interpolation import emit_interpolation
from verifier.onnx_import.registry import converter


def _pool(op: str):
    def convert(ctx: ConvertContext, node) -> None:
        x = ctx.value(node.input[0])
        if len(node.output) > 1 and node.output[1]:
            raise unsupported(node, "the Indices output")
        if not 1 <= x.rank - 2 <= 3:  # (torch's pools, which onnxruntime's match)
            raise unsupported(node, f"a window over {x.rank - 2} spatial axes (1 to 3)")
        attrs, shape = pool_attrs(ctx, node, x, op)
        ctx.bind(node.output[0], ctx.emit(op, [x], shape, attrs))

    return convert


def pool_attrs(ctx: ConvertContext, node, x: Dyn, op: str) -> tuple[dict, tuple[int, ...]]:
    """(IR attributes, output shape) of a window pooling ``op`` over ``x`` from the ONNX
    node's kernel, strides, pads (auto_pad), dilations, ceil_mode and count_include_pad."""
    kernel = [int(k) for k in ctx.attr(node, "kernel_shape")]
    n = len(kernel)
    if x.rank != n + 2:
        raise ModelError(f"{op} node {node.name!r}: input rank {x.rank}, kernel rank {n}")
    strides = [int(s) for s in ctx.attr(node, "strides") or [1] * n]
    dilations = [int(d) for d in ctx.attr(node, "dilations") or [1] * n]
    if op == "AveragePool" and any(d != 1 for d in dilations):
        raise unsupported(node, "dilations")
    pads = resolve_pads(ctx, node, x.shape[2:], kernel, strides, dilations)
    ceil = bool(ctx.attr(node, "ceil_mode", 0))
    out, extra = [], []
    for i, size in enumerate(x.shape[2:]):
        span = (kernel[i] - 1) * dilations[i] + 1
        padded = size + pads[i] + pads[i + n]
        o = (-(-(padded - span) // strides[i]) if ceil else (padded - span) // strides[i]) + 1
        if ceil and (o - 1) * strides[i] >= size + pads[i]:
            o -= 1  # the last window would start in the end padding
        out.append(o)
        extra.append(max(0, (o - 1) * strides[i] + span - padded))
    attrs = {"kernel_shape": tuple(kernel), "strides": tuple(strides), "pads": tuple(pads),
             "dilations": tuple(dilations), "extra": tuple(extra),
             "count_include_pad": int(ctx.attr(node, "count_include_pad", 0))}
    return attrs, x.shape[:2] + tuple(out)


for _version in (1, 7, 10, 11, 19):
    converter("AveragePool", _version)(_pool("AveragePool"))
for _version in (1, 8, 10, 11, 12):
    converter("MaxPool", _version)(_pool("MaxPool"))


@converter("GlobalAveragePool", 1)
def global_average_pool(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    shape = x.shape[:2] + (1,) * (x.rank - 2)
    ctx.bind(node.output[0], ctx.emit("GlobalAveragePool", [x], shape))


@converter("GlobalMaxPool", 1)
def global_max_pool(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    shape = x.shape[:2] + (1,) * (x.rank - 2)
    attrs = {"axes": tuple(range(2, x.rank)), "keepdims": 1}
    ctx.bind(node.output[0], ctx.emit("ReduceMax", [x], shape, attrs))


def reduce_axes(ctx: ConvertContext, node, x: Dyn, axes_input_from: int
                ) -> tuple[tuple[int, ...], int] | None:
    """(sorted axes, keepdims) of a Reduce* node over ``x`` (axes an input from opset
    ``axes_input_from``, an attribute before); None when it is a no-op (empty axes with
    ``noop_with_empty_axes``)."""
    keepdims = int(ctx.attr(node, "keepdims", 1))
    if ctx.opset >= axes_input_from:
        axes = ctx.optional_const(node, 1)
    else:
        axes = ctx.attr(node, "axes")
    axes = None if axes is None else [int(a) for a in np.ravel(axes)]
    if not axes:
        if ctx.attr(node, "noop_with_empty_axes", 0):
            return None
        axes = list(range(x.rank))
    return tuple(sorted({normalize_axis(a, x.rank) for a in axes})), keepdims


def reduced_shape(shape: tuple, axes: tuple, keepdims: int) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


def _reduce(op: str, axes_input_from: int):
    def convert(ctx: ConvertContext, node) -> None:
        x = ctx.value(node.input[0])
        found = reduce_axes(ctx, node, x, axes_input_from)
        if found is None:
            ctx.bind(node.output[0], x)
            return
        axes, keepdims = found
        attrs = {"axes": axes, "keepdims": keepdims}
        ctx.bind(node.output[0], ctx.emit(op, [x], reduced_shape(x.shape, axes, keepdims),
                                          attrs))

    return convert


for _op, _since in (("ReduceSum", 13), ("ReduceMean", 18), ("ReduceMax", 18)):
    for _version in (1, 11, 13, 18):
        converter(_op, _version)(_reduce(_op, _since))


@converter("Pad", 2)
def pad(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    mode = ctx.attr(node, "mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ModelError(f"Pad node {node.name!r}: mode {mode!r} is not supported")
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attr(node, "pads")]
        value = float(ctx.attr(node, "value", 0.0))
    else:
        pads = [int(p) for p in np.ravel(ctx.const(node.input[1]))]
        value = ctx.optional_const(node, 2)
        value = 0.0 if value is None or np.size(value) == 0 else float(np.ravel(value)[0])
        axes = ctx.optional_const(node, 3)
        if axes is not None:
            full = [0] * (2 * x.rank)
            axes = [normalize_axis(int(a), x.rank) for a in np.ravel(axes)]
            for i, a in enumerate(axes):
                full[a], full[a + x.rank] = pads[i], pads[i + len(axes)]
            pads = full
    if not any(pads):
        ctx.bind(node.output[0], x)
        return
    shape = tuple(d + pads[i] + pads[i + x.rank] for i, d in enumerate(x.shape))
    attrs = {"pads": tuple(pads), "mode": mode, "value": value}
    ctx.bind(node.output[0], ctx.emit("Pad", [x], shape, attrs))


for _version in (11, 13, 18, 19):
    converter("Pad", _version)(pad)


def _emit_resize(ctx: ConvertContext, x: Dyn, per_axis: list) -> Dyn:
    shape = tuple(len(idx) if idx is not None else d for idx, d in zip(per_axis, x.shape,
                                                                        strict=True))
    attrs = {"indices": tuple(None if i is None else tuple(int(v) for v in i) for i in per_axis)}
    return ctx.emit("Resize", [x], shape, attrs)


@converter("Upsample", 7)
def upsample(ctx: ConvertContext, node) -> None:
    """Nearest upsampling: output index o reads input index floor(o / scale)."""
    x = ctx.value(node.input[0])
    scales = ctx.attr(node, "scales") if ctx.opset < 9 else ctx.const(node.input[1])
    mode = ctx.attr(node, "mode", "nearest")
    if mode in ("linear", "bilinear"):
        ctx.bind(node.output[0], emit_interpolation(ctx, node, x, np.ravel(scales), None,
                                                    legacy=True))
        return
    if mode != "nearest":
        raise unsupported(node, f"mode {mode!r}")
    per_axis = []
    for d, s in zip(x.shape, np.ravel(scales).tolist(), strict=True):
        size = int(np.floor(d * s))
        per_axis.append(None if size == d else
                        np.minimum(np.floor(np.arange(size) / s).astype(np.int64), d - 1))
    ctx.bind(node.output[0], _emit_resize(ctx, x, per_axis))


converter("Upsample", 9)(upsample)


@converter("Resize", 10)
def resize(ctx: ConvertContext, node) -> None:
    """Nearest resize as a gather: the source index of every output position along each axis
    is found by running the node (ONNX reference implementation) on a tensor of indices."""
    x = ctx.value(node.input[0])
    mode = ctx.attr(node, "mode", "nearest")
    if mode in ("linear", "cubic"):
        ctx.bind(node.output[0], _interpolated_resize(ctx, node, x))
        return
    if mode != "nearest":
        raise unsupported(node, f"mode {mode!r}")
    from verifier.onnx_import.fold import reference_fold

    others = [None if n == "" else ctx.const(n) for n in node.input[1:]]
    per_axis = []
    for axis, d in enumerate(x.shape):
        probe = np.broadcast_to(np.arange(d, dtype=np.float32).reshape(
            (-1,) + (1,) * (x.rank - axis - 1)), x.shape).copy()
        out = reference_fold(ctx, node, [probe, *others])[0]
        idx = np.round(out[(0,) * axis + (slice(None),) + (0,) * (x.rank - axis - 1)])
        idx = idx.astype(np.int64)
        per_axis.append(None if len(idx) == d and np.all(idx == np.arange(d)) else idx)
    ctx.bind(node.output[0], _emit_resize(ctx, x, per_axis))


def _interpolated_resize(ctx: ConvertContext, node, x: Dyn) -> Dyn:
    """Linear or cubic Resize: scales (Resize 10: input 1; later: input 2, unless empty)
    or sizes (input 3)."""
    if ctx.opset < 11:
        return emit_interpolation(ctx, node, x, np.ravel(ctx.const(node.input[1])), None,
                                  legacy=True)
    scales = ctx.optional_const(node, 2)
    scales = None if scales is None or np.size(scales) == 0 else np.ravel(scales)
    sizes = ctx.optional_const(node, 3)
    sizes = None if sizes is None or np.size(sizes) == 0 else np.ravel(sizes)
    if (scales is None) == (sizes is None):
        raise ModelError(f"Resize node {node.name!r}: needs exactly one of scales and sizes")
    return emit_interpolation(ctx, node, x, scales, sizes)


for _version in (11, 13, 18, 19):
    converter("Resize", _version)(resize)
