"""Broadcasting elementwise arithmetic: Add, Sub, Mul, Div, Neg, Pow; Max, Min, Sum, Mean
(variadic) through Relu and Add.

Every operand of an emitted node gets the output's rank (constants carry no batch axis, so
right-aligned broadcasting matches ONNX only then). ``c / x`` with a constant numerator becomes
``c * Reciprocal(x)``, so IR Div always has a constant or dynamic divisor and affine Div means
a constant divisor.
"""

from __future__ import annotations

import numpy as np

from verifier.onnx_import.context import ConvertContext, Dyn, shape_of, unsupported
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
    """x ** c with a constant exponent -> IR Pow(exponent=c); an input-dependent exponent e
    becomes Exp(e * ln c) for a constant positive base c and Exp(e * Log(x)) for a dynamic
    base x, which the Log rule requires to be positive (else its bounds raise a DomainError
    naming the node); ONNX's pow of a negative base has no such form and is refused."""
    x, e = ctx.value(node.input[0]), ctx.value(node.input[1])
    if isinstance(e, Dyn):
        ctx.bind(node.output[0], _dynamic_exponent(ctx, node, x, e))
        return
    values = np.unique(np.asarray(e, dtype=np.float64))
    if values.size != 1:
        raise unsupported(node, "an exponent tensor with different values")
    exponent = float(values[0])
    out_shape = broadcast_shape(x.shape, np.shape(e))
    y = x if exponent == 1.0 else ctx.emit("Pow", [x], x.shape, {"exponent": exponent})
    ctx.bind(node.output[0], align_rank(ctx, y, len(out_shape)))


def _dynamic_exponent(ctx: ConvertContext, node, base, exponent: Dyn) -> Dyn:
    if isinstance(base, Dyn):
        log = ctx.emit("Log", [base], base.shape, hint="pow_base_log")
    else:
        base = np.asarray(base, dtype=np.float64)
        if np.any(base <= 0):
            raise unsupported(node, "an input-dependent exponent of a base that is not positive")
        log = np.log(base)
    product = emit_broadcast(ctx, "Mul", [exponent, log])
    return ctx.emit("Exp", [product], product.shape, hint="pow")


def max_pair(ctx: ConvertContext, a, b):
    """max(a, b) = a + Relu(b - a), exact over the reals (onnxruntime's max is exact too, so
    the float32 allowances of Sub and Add only widen the bounds)."""
    if not isinstance(a, Dyn):
        if not isinstance(b, Dyn):
            return np.maximum(a, b)
        a, b = b, a
    gap = emit_broadcast(ctx, "Sub", [b, a])
    return emit_broadcast(ctx, "Add", [a, ctx.emit("Relu", [gap], gap.shape)])


def min_pair(ctx: ConvertContext, a, b):
    """min(a, b) = -max(-a, -b)."""
    if not isinstance(a, Dyn) and not isinstance(b, Dyn):
        return np.minimum(a, b)
    neg = [ctx.emit("Neg", [v], v.shape) if isinstance(v, Dyn) else -np.asarray(v)
           for v in (a, b)]
    out = max_pair(ctx, *neg)
    return ctx.emit("Neg", [out], out.shape)


def stacked_extreme(ctx: ConvertContext, a, b, largest: bool) -> Dyn:
    """max(a, b) (``largest``) or min(a, b) of two values, at least one dynamic, as a
    ReduceMax over a new last axis holding both (Neg around it for min): the forward value
    is one of the operands exactly, so values clamped to the same end stay equal (an ArgMax
    after a Clip with an input-dependent end sees onnxruntime's ties; the Relu form
    a + Relu(b - a) rounds differently per element in float64)."""
    shape = broadcast_shape(shape_of(a), shape_of(b))
    parts = []
    for v in (a, b):
        if not isinstance(v, Dyn):
            v = np.broadcast_to(np.asarray(v, dtype=np.float32), shape)
            v = v if largest else -v
            parts.append(np.ascontiguousarray(v).reshape(shape + (1,)))
            continue
        v = align_rank(ctx, v, len(shape))
        if v.shape != shape:
            v = ctx.emit("Expand", [v], shape)
        if not largest:
            v = ctx.emit("Neg", [v], shape)
        parts.append(ctx.emit("Reshape", [v], shape + (1,)))
    both = ctx.emit("Concat", parts, shape + (2,), {"axis": len(shape)})
    top = ctx.emit("ReduceMax", [both], shape, {"axes": (len(shape),), "keepdims": 0})
    return top if largest else ctx.emit("Neg", [top], shape)


def _variadic(pair):
    def convert(ctx: ConvertContext, node) -> None:
        values = [ctx.value(n) for n in node.input if n]
        out = values[0]
        for v in values[1:]:
            out = pair(ctx, out, v)
        ctx.bind(node.output[0], out)

    return convert


def _add_pair(ctx: ConvertContext, a, b):
    return emit_broadcast(ctx, "Add", [a, b])


converter("Max", 1)(_variadic(max_pair))
converter("Min", 1)(_variadic(min_pair))
converter("Sum", 1)(_variadic(_add_pair))


@converter("Mean", 1)
def mean(ctx: ConvertContext, node) -> None:
    """The sum of the inputs times 1/n."""
    values = [ctx.value(n) for n in node.input if n]
    total = values[0]
    for v in values[1:]:
        total = _add_pair(ctx, total, v)
    if len(values) > 1:
        total = emit_broadcast(ctx, "Mul", [total, np.full((1,) * len(shape_of(total)),
                                                            1.0 / len(values))])
    ctx.bind(node.output[0], total)
