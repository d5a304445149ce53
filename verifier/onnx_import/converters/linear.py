"""Gemm and MatMul. A constant right operand of rank 2 gives IR Linear (y = x W^T + b); any
other combination with a dynamic operand gives IR MatMul on operands of equal rank (1-D
operands are promoted and the added axis removed again, as ONNX MatMul does)."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of
from verifier.onnx_import.converters.arithmetic import align_rank, emit_broadcast
from verifier.onnx_import.converters.shape import reshape_value
from verifier.onnx_import.registry import converter


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32) if np.asarray(a).dtype != np.float64 else np.asarray(a)


def emit_linear(ctx: ConvertContext, x: Dyn, weight: np.ndarray, bias) -> Dyn:
    """y = x @ weight.T + bias over the last axis; weight is [out, in]."""
    shape = x.shape[:-1] + (weight.shape[0],)
    if bias is not None:
        bias = _as_float(np.broadcast_to(np.asarray(bias), (weight.shape[0],)).copy())
    return ctx.emit("Linear", [x, _as_float(weight), bias], shape, hint="linear")


@converter("Gemm", 1)
def gemm(ctx: ConvertContext, node) -> None:
    a, b = ctx.value(node.input[0]), ctx.value(node.input[1])
    c = ctx.optional(node, 2)
    alpha, beta = ctx.attr(node, "alpha", 1.0), ctx.attr(node, "beta", 1.0)
    trans_a, trans_b = ctx.attr(node, "transA", 0), ctx.attr(node, "transB", 0)
    if isinstance(a, Dyn) and not isinstance(b, Dyn) and (c is None or not isinstance(c, Dyn)):
        if trans_a:
            a = ctx.emit("Transpose", [a], a.shape[::-1], {"perm": (1, 0)})
        weight = np.asarray(b if trans_b else np.asarray(b).T, dtype=np.float32)  # [out, in]
        full = None if c is None else np.broadcast_to(
            beta * np.asarray(c, dtype=np.float64), (a.shape[0], weight.shape[0]))
        if alpha == 1.0 and (full is None or np.all(full == full[:1])):
            bias = None if full is None else full[0]
            ctx.bind(node.output[0], emit_linear(ctx, a, weight, bias))
            return
        # onnxruntime scales the product by alpha, a rounding of its own (a Mul's allowance;
        # alpha folded into float32 weights would round each weight instead); a bias that
        # differs between rows is added after
        y = emit_linear(ctx, a, weight, None)
        if alpha != 1.0:
            y = emit_broadcast(ctx, "Mul", [y, np.asarray(alpha, dtype=np.float32)])
        if full is not None:
            y = emit_broadcast(ctx, "Add", [y, _as_float(np.array(full))])
        ctx.bind(node.output[0], y)
        return
    a = _transposed(ctx, a) if trans_a else a
    b = _transposed(ctx, b) if trans_b else b
    y = _matmul(ctx, a, b)
    if alpha != 1.0:
        y = emit_broadcast(ctx, "Mul", [y, np.asarray(alpha, dtype=np.float32)])
    if c is not None:
        c = c if isinstance(c, Dyn) else np.asarray(beta * np.asarray(c), dtype=np.float32)
        if isinstance(c, Dyn) and beta != 1.0:
            c = emit_broadcast(ctx, "Mul", [c, np.asarray(beta, dtype=np.float32)])
        y = emit_broadcast(ctx, "Add", [y, c])
    ctx.bind(node.output[0], y)


def _transposed(ctx: ConvertContext, v):
    if isinstance(v, Dyn):
        return ctx.emit("Transpose", [v], v.shape[::-1], {"perm": (1, 0)})
    return np.asarray(v).T


def _matmul(ctx: ConvertContext, a, b):
    sa, sb = shape_of(a), shape_of(b)
    if isinstance(a, Dyn) and not isinstance(b, Dyn) and len(sb) == 2:
        x = a if a.rank >= 2 else reshape_value(ctx, a, (1,) + a.shape)
        y = emit_linear(ctx, x, np.asarray(b).T, None)
        return reshape_value(ctx, y, y.shape[1:]) if a.rank == 1 else y
    if len(sa) == 0 or len(sb) == 0:
        raise ModelError("MatMul operands must have rank >= 1")
    a2 = a if len(sa) >= 2 else _reshape_any(ctx, a, (1,) + sa)
    b2 = b if len(sb) >= 2 else _reshape_any(ctx, b, sb + (1,))
    sa2, sb2 = shape_of(a2), shape_of(b2)
    if sa2[-1] != sb2[-2]:
        raise ModelError(f"MatMul inner dimensions differ: {sa} @ {sb}")
    batch = tuple(int(d) for d in np.broadcast_shapes(sa2[:-2], sb2[:-2]))
    rank = len(batch) + 2
    out = batch + (sa2[-2], sb2[-1])
    y = ctx.emit("MatMul", [align_rank(ctx, a2, rank), align_rank(ctx, b2, rank)], out)
    final = out
    if len(sa) == 1:
        final = final[:-2] + final[-1:]
    if len(sb) == 1:
        final = final[:-1]
    return reshape_value(ctx, y, final)


def _reshape_any(ctx, v, shape):
    return reshape_value(ctx, v, shape) if isinstance(v, Dyn) else np.reshape(v, shape)


@converter("MatMul", 1)
def matmul(ctx: ConvertContext, node) -> None:
    a, b = ctx.value(node.input[0]), ctx.value(node.input[1])
    if not isinstance(b, Dyn):
        b = _as_float(b)
    if not isinstance(a, Dyn):
        a = _as_float(a)
    ctx.bind(node.output[0], _matmul(ctx, a, b))


converter("MatMul", 9)(matmul)
converter("MatMul", 13)(matmul)
