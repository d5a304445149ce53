"""Shape ops: Flatten, Reshape, Squeeze, Unsqueeze (all IR Reshape), Transpose, Concat, Slice,
Split (one IR Slice per output), Gather, Expand, Tile (ScatterND: scatter.py). Shape
operands and indices must be constants, except a Slice's starts when ends = starts + k
(IR DynamicSlice)."""

from __future__ import annotations

import math

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import (
    ConvertContext,
    Dyn,
    Value,
    is_dyn,
    normalize_axis,
    shape_of,
    unsupported,
)
from verifier.onnx_import.registry import converter


def reshape_value(ctx: ConvertContext, x, shape) -> object:
    shape = tuple(int(d) for d in shape)
    if isinstance(x, Dyn):
        if shape == x.shape:
            return x
        if math.prod(shape) != math.prod(x.shape):
            raise ModelError(f"cannot reshape {x.shape} to {shape}")
        return ctx.emit("Reshape", [x], shape)
    return np.reshape(x, shape)


def join_values(ctx: ConvertContext, parts: list, axis: int, new_axis: bool = False):
    """``parts`` concatenated along ``axis`` (``new_axis``: stacked along a new axis there,
    of parts of equal shape); constants stay numpy."""
    if new_axis:
        parts = [reshape_value(ctx, p, shape_of(p)[:axis] + (1,) + shape_of(p)[axis:])
                 for p in parts]
    if not any(isinstance(p, Dyn) for p in parts):
        return np.concatenate([np.asarray(p) for p in parts], axis=axis)
    if len(parts) == 1:
        return parts[0]
    shape = list(shape_of(parts[0]))
    shape[axis] = sum(shape_of(p)[axis] for p in parts)
    return ctx.emit("Concat", parts, tuple(shape), {"axis": axis})


@converter("Flatten", 1)
def flatten(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    shape = shape_of(x)
    axis = normalize_axis(ctx.attr(node, "axis", 1), len(shape) + 1) if shape else 0
    target = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    ctx.bind(node.output[0], reshape_value(ctx, x, target))


converter("Flatten", 9)(flatten)
converter("Flatten", 13)(flatten)


def resolve_reshape(in_shape, target, allowzero: bool = False) -> tuple[int, ...]:
    target = [int(d) for d in target]
    out = [in_shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ModelError(f"Reshape target {target} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(in_shape) // known if known else 0
    return tuple(out)


@converter("Reshape", 1)
def reshape(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    if ctx.opset < 5:
        target = ctx.attr(node, "shape")
    else:
        target = ctx.const(node.input[1], f"shape input of Reshape {node.name!r}")
    allowzero = bool(ctx.attr(node, "allowzero", 0))
    ctx.bind(node.output[0], reshape_value(ctx, x, resolve_reshape(shape_of(x), target,
                                                                   allowzero)))


converter("Reshape", 5)(reshape)


def _axes(ctx: ConvertContext, node, pos: int = 1):
    """Axes from the attribute (older opsets) or the optional constant input (opset 13+)."""
    if ctx.opset >= 13:
        axes = ctx.optional_const(node, pos)
    else:
        axes = ctx.attr(node, "axes")
    return None if axes is None else [int(a) for a in np.ravel(axes)]


@converter("Squeeze", 1)
def squeeze(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    shape = shape_of(x)
    axes = _axes(ctx, node)
    if axes is None:
        keep = [d for d in shape if d != 1]
    else:
        drop = {normalize_axis(a, len(shape)) for a in axes}
        keep = [d for i, d in enumerate(shape) if i not in drop]
    ctx.bind(node.output[0], reshape_value(ctx, x, keep))


@converter("Unsqueeze", 1)
def unsqueeze(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    shape = list(shape_of(x))
    axes = _axes(ctx, node)
    if axes is None:
        raise ModelError(f"Unsqueeze node {node.name!r} has no axes")
    rank = len(shape) + len(axes)
    for a in sorted(normalize_axis(a, rank) for a in axes):
        shape.insert(a, 1)
    ctx.bind(node.output[0], reshape_value(ctx, x, shape))


for _op, _fn in (("Squeeze", squeeze), ("Unsqueeze", unsqueeze)):
    converter(_op, 11)(_fn)
    converter(_op, 13)(_fn)


@converter("Transpose", 1)
def transpose(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    perm = ctx.attr(node, "perm") or list(reversed(range(x.rank)))
    perm = tuple(normalize_axis(int(p), x.rank) for p in perm)
    if perm == tuple(range(x.rank)):
        ctx.bind(node.output[0], x)
        return
    shape = tuple(x.shape[p] for p in perm)
    ctx.bind(node.output[0], ctx.emit("Transpose", [x], shape, {"perm": perm}))


converter("Transpose", 13)(transpose)


@converter("Concat", 1)
def concat(ctx: ConvertContext, node) -> None:
    parts = [ctx.value(n) for n in node.input if n]
    parts = [p for p in parts if math.prod(shape_of(p)) > 0 or isinstance(p, Dyn)]
    rank = len(shape_of(parts[0]))
    axis = normalize_axis(ctx.attr(node, "axis", 1 if ctx.opset < 4 else 0), rank)
    shape = list(shape_of(parts[0]))
    shape[axis] = sum(shape_of(p)[axis] for p in parts)
    if len(parts) == 1:
        ctx.bind(node.output[0], parts[0])
        return
    ctx.bind(node.output[0], ctx.emit("Concat", parts, shape, {"axis": axis}))


converter("Concat", 4)(concat)
converter("Concat", 11)(concat)
converter("Concat", 13)(concat)


def slice_params(dim: int, start: int, end: int, step: int) -> tuple[int, int, int, int]:
    """Clamp start/end as ONNX Slice does; returns (start, end, step, length)."""
    if step == 0:
        raise ModelError("Slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        length = max(0, -(-(end - start) // step))
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        length = max(0, -(-(start - end) // -step))
    return start, end, step, length


def emit_slice(ctx: ConvertContext, x: Dyn, axes, starts, ends, steps) -> Dyn:
    shape = list(x.shape)
    attrs: dict[str, list[int]] = {"axes": [], "starts": [], "ends": [], "steps": []}
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis = normalize_axis(int(axis), x.rank)
        start, end, step, length = slice_params(shape[axis], int(start), int(end), int(step))
        if step == 1 and start == 0 and length == shape[axis]:
            continue
        shape[axis] = length
        for key, v in zip(("axes", "starts", "ends", "steps"), (axis, start, end, step),
                          strict=True):
            attrs[key].append(v)
    if not attrs["axes"]:
        return x
    return ctx.emit("Slice", [x], shape, {k: tuple(v) for k, v in attrs.items()})


_BIG = 2**62  # INT_MAX-like ends from exporters


def _slice_const(x: np.ndarray, axis: int, start: int, end: int, step: int) -> np.ndarray:
    start, end, step, _ = slice_params(np.shape(x)[axis], start, end, step)
    return np.take(x, np.arange(start, end, step), axis=axis)


def dynamic_slice(ctx: ConvertContext, node, x) -> Value:
    """A Slice whose starts or ends depend on the input. Per sliced axis: constant starts and
    ends slice statically; a start that depends on the input with end = start + k (k constant,
    proved on the emitted IR by ``ConvertContext.element_origins``) and step 1 becomes IR
    DynamicSlice (bounds/rules/dynamic_slice.py); anything else would make the output's
    length depend on the input, which a static shape cannot hold, and is refused."""
    starts, ends = ctx.value(node.input[1]), ctx.value(node.input[2])
    s_org, e_org = ctx.element_origins(starts), ctx.element_origins(ends)
    n = len(s_org)
    axes = ctx.optional_const(node, 3)
    axes = list(range(n)) if axes is None else [int(a) for a in np.ravel(axes)]
    steps = ctx.optional_const(node, 4)
    steps = [1] * n if steps is None else [int(v) for v in np.ravel(steps)]
    if not len(e_org) == len(axes) == len(steps) == n:
        raise ModelError(f"Slice node {node.name!r}: {n} starts, {len(e_org)} ends, "
                         f"{len(axes)} axes and {len(steps)} steps")
    shape = list(shape_of(x))
    axes = [normalize_axis(a, len(shape)) for a in axes]
    if len(set(axes)) != n:
        raise ModelError(f"Slice node {node.name!r}: repeated axes {axes}")
    fixed, moving = [], []  # (axis, start, end, step) / (position in starts, axis, length)
    for i, ((sv, si, so), (ev, ei, eo)) in enumerate(zip(s_org, e_org, strict=True)):
        if sv is None and ev is None:
            fixed.append((axes[i], max(min(int(so), _BIG), -_BIG),
                          max(min(int(eo), _BIG), -_BIG), steps[i]))
            continue
        if sv is None or (sv, si) != (ev, ei) or eo - so != round(eo - so):
            raise unsupported(node, "starts or ends depend on the input and ends - starts is "
                                    "not a constant (ends = starts + k), so the output length "
                                    "would depend on the input")
        if steps[i] != 1:
            raise unsupported(node, f"step {steps[i]} with input-dependent starts (only 1)")
        k = int(round(eo - so))
        if not 0 < k <= shape[axes[i]]:
            raise unsupported(node, f"ends - starts = {k} on an axis of size {shape[axes[i]]} "
                                    "with input-dependent starts (only 1..size)")
        moving.append((i, axes[i], k))
    if is_dyn(x):
        x = emit_slice(ctx, x, *zip(*fixed, strict=True)) if fixed else x
    else:
        for axis, start, end, step in fixed:
            x = _slice_const(x, axis, start, end, step)
        if (np.issubdtype(np.asarray(x).dtype, np.integer)
                and np.any(np.abs(np.asarray(x, dtype=np.float64)) > 2.0**24)):
            raise unsupported(node, "constant data beyond 2**24 in magnitude sliced at "
                                    "input-dependent starts (not exact in float32)")
    if not moving:
        return x
    start = reshape_value(ctx, starts, (n,))
    if len(moving) < n:
        picks = np.asarray([i for i, _, _ in moving], dtype=np.int64)
        start = ctx.emit("Gather", [start, picks], (len(moving),), {"axis": 0})
    out_shape = list(shape_of(x))
    for _, axis, k in moving:
        out_shape[axis] = k
    attrs = {"axes": tuple(a for _, a, _ in moving), "lengths": tuple(k for _, _, k in moving)}
    return ctx.emit("DynamicSlice", [x, start], out_shape, attrs)


@converter("Slice", 1)
def slice_(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    if ctx.opset < 10:
        starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
        axes = ctx.attr(node, "axes")
        steps = None
    else:
        if is_dyn(ctx.value(node.input[1])) or is_dyn(ctx.value(node.input[2])):
            ctx.bind(node.output[0], dynamic_slice(ctx, node, x))
            return
        starts, ends = ctx.const(node.input[1]), ctx.const(node.input[2])
        axes, steps = ctx.optional_const(node, 3), ctx.optional_const(node, 4)
    starts, ends = np.ravel(starts).tolist(), np.ravel(ends).tolist()
    axes = list(range(len(starts))) if axes is None else np.ravel(axes).tolist()
    steps = [1] * len(starts) if steps is None else np.ravel(steps).tolist()
    big = 2**62  # INT_MAX-like ends from exporters
    ends = [max(min(e, big), -big) for e in ends]
    starts = [max(min(s, big), -big) for s in starts]
    ctx.bind(node.output[0], emit_slice(ctx, x, axes, starts, ends, steps))


converter("Slice", 10)(slice_)
converter("Slice", 13)(slice_)


@converter("Split", 1)
def split(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    axis = normalize_axis(ctx.attr(node, "axis", 0), x.rank)
    dim = x.shape[axis]
    parts = ctx.attr(node, "split") if ctx.opset < 13 else ctx.optional_const(node, 1)
    n_out = len(node.output)
    if parts is None:
        chunk = -(-dim // n_out)
        parts = [min(chunk, dim - i * chunk) for i in range(n_out)]
    start = 0
    for name, size in zip(node.output, np.ravel(parts).tolist(), strict=True):
        y = emit_slice(ctx, x, [axis], [start], [start + int(size)], [1])
        start += int(size)
        if name:
            ctx.bind(name, y)


for _version in (2, 11, 13, 18):
    converter("Split", _version)(split)


@converter("Gather", 1)
def gather(ctx: ConvertContext, node) -> None:
    x, idx = ctx.value(node.input[0]), ctx.value(node.input[1])
    if isinstance(idx, Dyn):
        raise unsupported(node, "input-dependent indices")
    axis = normalize_axis(ctx.attr(node, "axis", 0), x.rank)
    idx = np.asarray(idx, dtype=np.int64)
    dim = x.shape[axis]
    if np.any(idx < -dim) or np.any(idx >= dim):
        raise ModelError(f"Gather node {node.name!r}: index out of range for axis size {dim}")
    ctx.bind(node.output[0], emit_gather(ctx, x, np.where(idx < 0, idx + dim, idx), axis))


def emit_gather(ctx: ConvertContext, x: Dyn, idx, axis: int) -> Dyn:
    """x's entries at the constant, non-negative indices ``idx`` along ``axis``."""
    idx = np.asarray(idx, dtype=np.int64)
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    return ctx.emit("Gather", [x, idx], shape, {"axis": axis})


converter("Gather", 11)(gather)
converter("Gather", 13)(gather)


@converter("Expand", 8)
def expand(ctx: ConvertContext, node) -> None:
    from verifier.onnx_import.converters.arithmetic import align_rank, broadcast_shape

    x = ctx.value(node.input[0])
    target = [int(d) for d in np.ravel(ctx.const(node.input[1]))]
    shape = broadcast_shape(x.shape, target)
    if shape == x.shape:
        ctx.bind(node.output[0], x)
        return
    ctx.bind(node.output[0], ctx.emit("Expand", [align_rank(ctx, x, len(shape))], shape))


converter("Expand", 13)(expand)


@converter("Tile", 6)
def tile(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    repeats = tuple(int(r) for r in np.ravel(ctx.const(node.input[1])))
    if len(repeats) != x.rank:
        raise ModelError(f"Tile node {node.name!r}: {len(repeats)} repeats for rank {x.rank}")
    shape = tuple(d * r for d, r in zip(x.shape, repeats, strict=True))
    ctx.bind(node.output[0], ctx.emit("Tile", [x], shape, {"repeats": repeats}))


converter("Tile", 13)(tile)
