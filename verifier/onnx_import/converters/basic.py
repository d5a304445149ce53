"""Constant, Identity, Dropout, Shape, Size, and the constant-only ConstantOfShape and Range
(If and Loop: ``control_flow``)."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of, unsupported
from verifier.onnx_import.registry import converter


@converter("Constant", 1)
def constant(ctx: ConvertContext, node) -> None:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        value = ctx.attr(node, key)
        if value is not None:
            dtype = np.int64 if key.startswith("value_int") else None
            dtype = np.float32 if key.startswith("value_float") else dtype
            ctx.bind(node.output[0], np.asarray(value, dtype=dtype))
            return
    raise ModelError(f"Constant node {node.name!r} has no supported value attribute")


@converter("Identity", 1)
@converter("Dropout", 1)
def identity(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], ctx.value(node.input[0]))
    if len(node.output) > 1 and node.output[1]:
        x = ctx.value(node.input[0])
        ctx.bind(node.output[1], np.ones(shape_of(x), dtype=bool))


@converter("Shape", 1)
def shape(ctx: ConvertContext, node) -> None:
    """Shapes are static: the shape of a dynamic value is a constant (batch axis as 1)."""
    dims = np.asarray(shape_of(ctx.value(node.input[0])), dtype=np.int64)
    rank = len(dims)
    start, end = ctx.attr(node, "start", 0), ctx.attr(node, "end", rank)
    start, end = (max(0, min(rank, s + rank if s < 0 else s)) for s in (start, end))
    ctx.bind(node.output[0], dims[start:end])


converter("Shape", 15)(shape)


@converter("Size", 1)
def size(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], np.asarray(int(np.prod(shape_of(ctx.value(node.input[0])))),
                                        dtype=np.int64))


def _const_only(ctx: ConvertContext, node) -> None:
    """Ops whose output shape would depend on input values: only their constant form (folded
    at import) is supported, and ``supports`` does not list them."""
    raise unsupported(node, "an input-dependent operand would make the output's shape depend"
                      " on the input; only a constant one (folded at import) is supported")


for _op in ("ConstantOfShape", "Range"):
    converter(_op, 1, constant_only=True)(_const_only)


def dyn_or_none(value) -> Dyn | None:
    return value if isinstance(value, Dyn) else None
