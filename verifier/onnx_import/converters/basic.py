"""Constant, Identity, Dropout, Shape, ConstantOfShape, Cast, Equal."""

from __future__ import annotations

import numpy as np
import onnx

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of
from verifier.onnx_import.registry import converter

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16)


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


@converter("Cast", 1)
def cast(ctx: ConvertContext, node) -> None:
    """A cast between float types is the identity (we compute in one float dtype)."""
    x = ctx.value(node.input[0])
    to = ctx.attr(node, "to")
    if to not in _FLOAT_TYPES:
        raise ModelError(
            f"Cast node {node.name!r} casts an input-dependent value to a non-float type"
        )
    ctx.bind(node.output[0], x)


def _const_only(op: str):
    def convert(ctx: ConvertContext, node) -> None:
        raise ModelError(f"{op} node {node.name!r} has an input-dependent operand; only constant"
                         f" {op} (folded at import) is supported")

    return convert


for _op in ("Equal", "ConstantOfShape", "Less", "Greater", "Not", "And", "Or", "Range"):
    converter(_op, 1)(_const_only(_op))


def dyn_or_none(value) -> Dyn | None:
    return value if isinstance(value, Dyn) else None
