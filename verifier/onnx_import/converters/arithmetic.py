"""Broadcasting elementwise arithmetic: Add, Sub (more in later modules)."""

from __future__ import annotations

import numpy as np

from verifier.onnx_import.context import ConvertContext, Dyn
from verifier.onnx_import.registry import converter


def broadcast_shape(*shapes) -> tuple[int, ...]:
    return tuple(int(d) for d in np.broadcast_shapes(*shapes))


def align_rank(ctx: ConvertContext, value, rank: int):
    """Give an operand ``rank`` axes by prepending size-1 axes (ONNX right-aligned broadcast).

    Needed because constants carry no batch axis: right alignment then matches ONNX semantics
    only when every operand has the output's rank.
    """
    if isinstance(value, Dyn):
        if value.rank == rank:
            return value
        shape = (1,) * (rank - value.rank) + value.shape
        return ctx.emit("Reshape", [value], shape)
    return np.asarray(value).reshape((1,) * (rank - np.ndim(value)) + np.shape(value))


def binary(op: str, fn):
    def convert(ctx: ConvertContext, node) -> None:
        a, b = ctx.value(node.input[0]), ctx.value(node.input[1])
        if not isinstance(a, Dyn) and not isinstance(b, Dyn):
            ctx.bind(node.output[0], np.asarray(fn(a, b)).astype(np.result_type(a, b)))
            return
        shape = broadcast_shape(np.shape(a) if not isinstance(a, Dyn) else a.shape,
                                np.shape(b) if not isinstance(b, Dyn) else b.shape)
        a, b = align_rank(ctx, a, len(shape)), align_rank(ctx, b, len(shape))
        ctx.bind(node.output[0], ctx.emit(op, [a, b], shape))

    return convert


for _version in (1, 6, 7, 13, 14):
    converter("Add", _version)(binary("Add", np.add))
    converter("Sub", _version)(binary("Sub", np.subtract))
