"""Constant, Identity, Dropout and simple activations."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn
from verifier.onnx_import.registry import converter


@converter("Constant", 1)
def constant(ctx: ConvertContext, node) -> None:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        value = ctx.attr(node, key)
        if value is not None:
            ctx.bind(node.output[0], np.asarray(value))
            return
    raise ModelError(f"Constant node {node.name!r} has no supported value attribute")


@converter("Identity", 1)
@converter("Dropout", 1)
def identity(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], ctx.value(node.input[0]))


def unary(op: str, fn):
    """Converter for an elementwise unary op: fold constants with ``fn``, else emit ``op``."""

    def convert(ctx: ConvertContext, node) -> None:
        x = ctx.value(node.input[0])
        if isinstance(x, Dyn):
            ctx.bind(node.output[0], ctx.emit(op, [x], x.shape))
        else:
            ctx.bind(node.output[0], np.asarray(fn(x)).astype(x.dtype))

    return convert


converter("Relu", 1)(unary("Relu", lambda x: np.maximum(x, 0)))
