"""ONNX sequence ops, resolved at import into lists of values (``context.Sequence``).

TorchScript writes a Python list built in a loop as SequenceEmpty, a Loop whose body appends
with SequenceInsert, and ConcatFromSequence (``torch.stack``, ``torch.cat``) after it. With
the loop unrolled (``control_flow``) every position is known at import, so a sequence is a
tuple of values, constant or input-dependent, and its ops pick, add, drop and join them:
SequenceEmpty, SequenceConstruct, SequenceInsert, SequenceAt, SequenceErase, SequenceLength,
ConcatFromSequence and SplitToSequence (its split sizes constant). Positions must be
constants; a position outside the sequence is a model error, as in onnxruntime.
"""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import (
    ConvertContext,
    Dyn,
    Sequence,
    normalize_axis,
    shape_of,
    unsupported,
)
from verifier.onnx_import.converters.shape import emit_slice, join_values, reshape_value
from verifier.onnx_import.registry import converter


def _sequence(ctx: ConvertContext, node, pos: int = 0) -> Sequence:
    value = ctx.value(node.input[pos])
    if not isinstance(value, Sequence):
        raise ModelError(f"{node.op_type} node {node.name!r}: input {pos} is a tensor where a "
                         "sequence is expected")
    return value


def _position(ctx: ConvertContext, node, length: int, insert: bool = False) -> int | None:
    """Input 1 (an insert: input 2) as an index into a sequence of ``length`` (None: absent);
    negative positions count from the end."""
    at = 2 if insert else 1
    if len(node.input) <= at or not node.input[at]:
        return None
    value = ctx.value(node.input[at])
    if isinstance(value, Dyn):
        raise unsupported(node, "an input-dependent position")
    pos = int(np.ravel(value)[0])
    top = length if insert else length - 1
    if not -length <= pos <= top:
        raise ModelError(f"{node.op_type} node {node.name!r}: position {pos} outside a "
                         f"sequence of {length}")
    return pos + length if pos < 0 else pos


@converter("SequenceEmpty", 11)
def sequence_empty(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], Sequence(()))


@converter("SequenceConstruct", 11)
def sequence_construct(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], Sequence(tuple(ctx.value(n) for n in node.input)))


@converter("SequenceInsert", 11)
def sequence_insert(ctx: ConvertContext, node) -> None:
    seq = _sequence(ctx, node)
    pos = _position(ctx, node, len(seq.items), insert=True)
    pos = len(seq.items) if pos is None else pos
    item = ctx.value(node.input[1])
    ctx.bind(node.output[0], Sequence(seq.items[:pos] + (item,) + seq.items[pos:]))


@converter("SequenceAt", 11)
def sequence_at(ctx: ConvertContext, node) -> None:
    seq = _sequence(ctx, node)
    ctx.bind(node.output[0], seq.items[_position(ctx, node, len(seq.items))])


@converter("SequenceErase", 11)
def sequence_erase(ctx: ConvertContext, node) -> None:
    seq = _sequence(ctx, node)
    if not seq.items:
        raise ModelError(f"SequenceErase node {node.name!r}: the sequence is empty")
    pos = _position(ctx, node, len(seq.items))
    pos = len(seq.items) - 1 if pos is None else pos
    ctx.bind(node.output[0], Sequence(seq.items[:pos] + seq.items[pos + 1:]))


@converter("SequenceLength", 11)
def sequence_length(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], np.array(len(_sequence(ctx, node).items), dtype=np.int64))


@converter("ConcatFromSequence", 11)
def concat_from_sequence(ctx: ConvertContext, node) -> None:
    """The items joined along ``axis``, or stacked along a new ``axis`` (``new_axis`` 1)."""
    items = list(_sequence(ctx, node).items)
    if not items:
        raise ModelError(f"ConcatFromSequence node {node.name!r}: the sequence is empty")
    new_axis = bool(int(ctx.attr(node, "new_axis", 0)))
    axis = normalize_axis(int(ctx.attr(node, "axis")), len(shape_of(items[0])) + new_axis)
    ctx.bind(node.output[0], join_values(ctx, items, axis, new_axis))


@converter("SplitToSequence", 11)
def split_to_sequence(ctx: ConvertContext, node) -> None:
    """Pieces along ``axis``: of the constant sizes ``split`` (a scalar: chunks of that size,
    the last one shorter), or of size 1 each, that axis dropped unless ``keepdims``."""
    x = ctx.value(node.input[0])
    axis = normalize_axis(int(ctx.attr(node, "axis", 0)), len(shape_of(x)))
    dim = shape_of(x)[axis]
    split = ctx.optional_const(node, 1)
    drop = split is None and not int(ctx.attr(node, "keepdims", 1))
    if split is None:
        sizes = [1] * dim
    elif np.ndim(split) == 0:
        chunk = int(split)
        if chunk < 1:
            raise ModelError(f"SplitToSequence node {node.name!r}: split {chunk}")
        sizes = [min(chunk, dim - i) for i in range(0, dim, chunk)]
    else:
        sizes = [int(s) for s in np.ravel(split)]
    if sum(sizes) != dim or any(s < 0 for s in sizes):
        raise ModelError(f"SplitToSequence node {node.name!r}: sizes {sizes} for an axis of "
                         f"{dim}")
    pieces, start = [], 0
    for size in sizes:
        if isinstance(x, Dyn):
            piece = emit_slice(ctx, x, [axis], [start], [start + size], [1])
        else:
            piece = np.take(x, np.arange(start, start + size), axis=axis)
        if drop:
            kept = shape_of(piece)[:axis] + shape_of(piece)[axis + 1:]
            piece = reshape_value(ctx, piece, kept)
        pieces.append(piece)
        start += size
    ctx.bind(node.output[0], Sequence(tuple(pieces)))
