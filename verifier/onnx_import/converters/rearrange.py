"""Data movement and fixed linear maps with constant parameters: GatherElements, GatherND,
DepthToSpace, SpaceToDepth, ReverseSequence (a Gather of the flattened input at a constant
index map),
CumSum (Linear with a triangular 0/1 matrix along its axis) and Trilu (a 0/1 mask).

The index map is found by applying the op to the flat positions of the input
(``np.arange``), so every element of the output names the input element it copies: exact,
and one code path for every pure rearrangement."""

from __future__ import annotations

import math

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.converters.linear import emit_linear
from verifier.onnx_import.converters.shape import reshape_value
from verifier.onnx_import.registry import converter


def _positions(x: Dyn) -> np.ndarray:
    return np.arange(math.prod(x.shape), dtype=np.int64).reshape(x.shape)


def _gather_map(ctx: ConvertContext, x: Dyn, source: np.ndarray) -> Dyn:
    """y[i] = x.flat[source[i]], y of ``source``'s shape."""
    flat = reshape_value(ctx, x, (math.prod(x.shape),))
    return ctx.emit("Gather", [flat, np.asarray(source, dtype=np.int64)], source.shape,
                    {"axis": 0})


def _const_indices(ctx: ConvertContext, node) -> np.ndarray:
    idx = ctx.value(node.input[1])
    if isinstance(idx, Dyn):
        raise unsupported(node, "input-dependent indices")
    return np.asarray(idx, dtype=np.int64)


@converter("GatherElements", 11)
def gather_elements(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    axis = normalize_axis(int(ctx.attr(node, "axis", 0)), x.rank)
    idx = _const_indices(ctx, node)
    dim = x.shape[axis]
    if idx.ndim != x.rank or np.any(idx < -dim) or np.any(idx >= dim):
        raise ModelError(f"GatherElements node {node.name!r}: indices of shape {idx.shape} "
                         f"do not index axis {axis} of size {dim} in rank {x.rank}")
    idx = np.where(idx < 0, idx + dim, idx)
    pos = _positions(x)
    # (take_along_axis needs the other axes no longer than the input's: ONNX's rule too)
    if any(i > d for i, d in zip(idx.shape, x.shape, strict=True)):
        raise ModelError(f"GatherElements node {node.name!r}: indices of shape {idx.shape} "
                         f"exceed the input's {x.shape}")
    lead = tuple(slice(0, i) for i in idx.shape)
    lead = lead[:axis] + (slice(None),) + lead[axis + 1:]
    ctx.bind(node.output[0], _gather_map(ctx, x, np.take_along_axis(pos[lead], idx, axis)))


converter("GatherElements", 13)(gather_elements)


@converter("ReverseSequence", 10)
def reverse_sequence(ctx: ConvertContext, node) -> None:
    """Per batch entry b, the first ``sequence_lens[b]`` steps along ``time_axis`` reversed,
    the rest kept (tf2onnx writes it for a backward RNN of a Keras Bidirectional layer)."""
    x = ctx.value(node.input[0])
    lens = _const_indices(ctx, node).reshape(-1)
    time_axis = normalize_axis(int(ctx.attr(node, "time_axis", 0)), x.rank)
    batch_axis = normalize_axis(int(ctx.attr(node, "batch_axis", 1)), x.rank)
    if {time_axis, batch_axis} != {0, 1} or x.rank < 2:
        raise ModelError(f"ReverseSequence node {node.name!r}: time_axis {time_axis} and "
                         f"batch_axis {batch_axis} must be 0 and 1")
    steps, batch = x.shape[time_axis], x.shape[batch_axis]
    if lens.size != batch or np.any(lens < 0) or np.any(lens > steps):
        raise ModelError(f"ReverseSequence node {node.name!r}: sequence_lens {lens.tolist()} "
                         f"for a batch of {batch} and {steps} steps")
    source = np.moveaxis(_positions(x), (time_axis, batch_axis), (0, 1)).copy()
    for b, length in enumerate(lens.tolist()):
        source[:length, b] = source[:length, b][::-1].copy()
    ctx.bind(node.output[0], _gather_map(ctx, x, np.moveaxis(source, (0, 1),
                                                             (time_axis, batch_axis))))


@converter("GatherND", 11)
def gather_nd(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    batch_dims = int(ctx.attr(node, "batch_dims", 0))
    if batch_dims:
        raise unsupported(node, f"batch_dims={batch_dims}")
    idx = _const_indices(ctx, node)
    depth = idx.shape[-1] if idx.ndim else 0
    if idx.ndim < 1 or not 1 <= depth <= x.rank:
        raise ModelError(f"GatherND node {node.name!r}: indices of shape {idx.shape} for an "
                         f"input of rank {x.rank}")
    dims = np.asarray(x.shape[:depth])
    if np.any(idx < -dims) or np.any(idx >= dims):
        raise ModelError(f"GatherND node {node.name!r}: an index is out of range")
    idx = np.where(idx < 0, idx + dims, idx)
    pos = _positions(x)[tuple(np.moveaxis(idx, -1, 0))]
    ctx.bind(node.output[0], _gather_map(ctx, x, pos))


converter("GatherND", 12)(gather_nd)
converter("GatherND", 13)(gather_nd)


def _block_input(ctx: ConvertContext, node, to_depth: bool) -> tuple[Dyn, int]:
    """(the 4-D input, the block size) of a DepthToSpace / SpaceToDepth node, checked."""
    x = ctx.value(node.input[0])
    block = int(ctx.attr(node, "blocksize", 0))
    if x.rank != 4 or block < 1:
        raise ModelError(f"{node.op_type} node {node.name!r}: needs a 4-D input and a positive "
                         f"blocksize, got shape {x.shape} and {block}")
    _, c, h, w = x.shape
    if to_depth and (h % block or w % block):
        raise ModelError(f"SpaceToDepth node {node.name!r}: {h}x{w} not divisible by {block}")
    if not to_depth and c % (block * block):
        raise ModelError(f"DepthToSpace node {node.name!r}: {c} channels not divisible by "
                         f"{block * block}")
    return x, block


@converter("DepthToSpace", 1)
def depth_to_space(ctx: ConvertContext, node) -> None:
    x, b = _block_input(ctx, node, to_depth=False)
    n, c, h, w = x.shape
    pos = _positions(x)
    if ctx.attr(node, "mode", "DCR") == "CRD":
        moved = pos.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        moved = pos.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    ctx.bind(node.output[0], _gather_map(ctx, x, moved.reshape(n, c // (b * b), h * b, w * b)))


converter("DepthToSpace", 11)(depth_to_space)
converter("DepthToSpace", 13)(depth_to_space)


@converter("SpaceToDepth", 1)
def space_to_depth(ctx: ConvertContext, node) -> None:
    x, b = _block_input(ctx, node, to_depth=True)
    n, c, h, w = x.shape
    moved = _positions(x).reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    ctx.bind(node.output[0], _gather_map(ctx, x, moved.reshape(n, c * b * b, h // b, w // b)))


converter("SpaceToDepth", 13)(space_to_depth)


@converter("CumSum", 11)
def cumsum(ctx: ConvertContext, node) -> None:
    """Partial sums along ``axis``: a Linear with a triangular 0/1 matrix over that axis
    (moved last and back by Transposes), whose dot-product allowance covers any summation
    order."""
    x = ctx.value(node.input[0])
    axis = ctx.value(node.input[1])
    if isinstance(axis, Dyn):
        raise unsupported(node, "an input-dependent axis")
    axis = normalize_axis(int(np.ravel(axis)[0]), x.rank)
    length = x.shape[axis]
    out, src = np.indices((length, length))  # y[out] = sum over src of W[out, src] x[src]
    exclusive = bool(ctx.attr(node, "exclusive", 0))
    if ctx.attr(node, "reverse", 0):
        keep = (src > out) if exclusive else (src >= out)
    else:
        keep = (src < out) if exclusive else (src <= out)
    weight = keep.astype(np.float32)
    last = x.rank - 1
    perm = tuple(range(axis)) + tuple(range(axis + 1, x.rank)) + (axis,)
    moved = x if axis == last else ctx.emit("Transpose", [x], tuple(x.shape[p] for p in perm),
                                            {"perm": perm})
    y = emit_linear(ctx, moved, weight, None)
    if axis != last:
        back = tuple(int(k) for k in np.argsort(perm))
        y = ctx.emit("Transpose", [y], x.shape, {"perm": back})
    ctx.bind(node.output[0], y)


converter("CumSum", 14)(cumsum)


@converter("Trilu", 14)
def trilu(ctx: ConvertContext, node) -> None:
    """x times a constant 0/1 mask of the kept triangle of its last two axes (exact)."""
    x = ctx.value(node.input[0])
    if x.rank < 2:
        raise ModelError(f"Trilu node {node.name!r}: needs rank >= 2, got {x.rank}")
    k = ctx.optional_const(node, 1, 0)
    k = int(np.ravel(k)[0]) if np.size(k) else 0
    rows, cols = x.shape[-2:]
    i, j = np.indices((rows, cols))
    mask = (j - i >= k) if ctx.attr(node, "upper", 1) else (j - i <= k)
    ctx.bind(node.output[0], emit_broadcast(ctx, "Mul", [x, mask.astype(np.float32)]))
