"""Broadcasting elementwise arithmetic: Add, Sub, Mul, Div, Neg, Pow, Where.

Every operand of an emitted node gets the output's rank (constants carry no batch axis, so
right-aligned broadcasting matches ONNX only then). ``c / x`` with a constant numerator becomes
``c * Reciprocal(x)``, so IR Div always has a constant or dynamic divisor and affine Div means
a constant divisor.
"""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of
from verifier.onnx_import.registry import converter


def broadcast_shape(*shapes) -> tuple[int, ...]:
    return tuple(int(d) for d in np.broadcast_shapes(*shapes))


def align_rank(ctx: ConvertContext, value, rank: int):
    """Give an operand ``rank`` axes by prepending size-1 axes (ONNX right-aligned broadcast)."""
    if isinstance(value, Dyn):
        if value.rank == rank:
            return value
        shape = (1,) * (rank - value.rank) + value.shape
        return ctx.emit("Reshape", [value], shape)
    return np.asarray(value).reshape((1,) * (rank - np.ndim(value)) + np.shape(value))


def emit_broadcast(ctx: ConvertContext, op: str, operands: list, attrs=None) -> Dyn:
    shape = broadcast_shape(*(shape_of(v) for v in operands))
    aligned = [align_rank(ctx, v, len(shape)) for v in operands]
    return ctx.emit(op, aligned, shape, attrs)


def binary(op: str):
    def convert(ctx: ConvertContext, node) -> None:
        a, b = ctx.value(node.input[0]), ctx.value(node.input[1])
        if op == "Div" and isinstance(b, Dyn) and not isinstance(a, Dyn):
            recip = ctx.emit("Reciprocal", [b], b.shape)
            ctx.bind(node.output[0], emit_broadcast(ctx, "Mul", [a, recip]))
            return
        ctx.bind(node.output[0], emit_broadcast(ctx, op, [a, b]))

    return convert


for _version in (1, 6, 7, 13, 14):
    for _op in ("Add", "Sub", "Mul", "Div"):
        converter(_op, _version)(binary(_op))


@converter("Neg", 1)
def neg(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], ctx.emit("Neg", [x], x.shape))


converter("Neg", 6)(neg)
converter("Neg", 13)(neg)


@converter("Pow", 1)
def power(ctx: ConvertContext, node) -> None:
    """x ** c with a constant scalar exponent -> IR Pow(exponent=c)."""
    x, e = ctx.value(node.input[0]), ctx.value(node.input[1])
    if isinstance(e, Dyn) or not isinstance(x, Dyn):
        raise ModelError(f"Pow node {node.name!r}: only a dynamic base with a constant exponent"
                         " is supported")
    if np.size(e) != 1:
        raise ModelError(f"Pow node {node.name!r}: the exponent must be a scalar")
    exponent = float(np.ravel(e)[0])
    if exponent == 1.0:
        ctx.bind(node.output[0], x)
        return
    out_shape = broadcast_shape(x.shape, np.shape(e))
    y = ctx.emit("Pow", [x], x.shape, {"exponent": exponent})
    ctx.bind(node.output[0], align_rank(ctx, y, len(out_shape)))


@converter("Where", 9)
def where(ctx: ConvertContext, node) -> None:
    cond, x, y = (ctx.value(n) for n in node.input)
    if isinstance(cond, Dyn):
        raise ModelError(f"Where node {node.name!r}: an input-dependent condition is not"
                         " supported")
    ctx.bind(node.output[0], emit_broadcast(ctx, "Where", [np.asarray(cond, dtype=bool), x, y]))
