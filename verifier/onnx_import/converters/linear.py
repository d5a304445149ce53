"""Gemm and MatMul with a constant weight -> IR Linear; MatMul of two dynamic values -> MatMul."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn
from verifier.onnx_import.converters.shape import reshape_value
from verifier.onnx_import.registry import converter


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32) if np.asarray(a).dtype != np.float64 else np.asarray(a)


def emit_linear(ctx: ConvertContext, x: Dyn, weight: np.ndarray, bias) -> Dyn:
    """y = x @ weight.T + bias over the last axis; weight is [out, in]."""
    shape = x.shape[:-1] + (weight.shape[0],)
    if bias is not None:
        bias = np.broadcast_to(np.asarray(bias), (weight.shape[0],)).copy()
    return ctx.emit("Linear", [x, _as_float(weight), bias], shape, hint="linear")


@converter("Gemm", 1)
def gemm(ctx: ConvertContext, node) -> None:
    a = ctx.value(node.input[0])
    b = ctx.const(node.input[1], f"B input of Gemm {node.name!r}")
    c = ctx.optional_const(node, 2)
    alpha, beta = ctx.attr(node, "alpha", 1.0), ctx.attr(node, "beta", 1.0)
    if ctx.attr(node, "transA", 0):
        if not isinstance(a, Dyn):
            a = a.T
        else:
            raise ModelError(f"Gemm {node.name!r} with transA on a dynamic input is not supported")
    if not isinstance(a, Dyn):
        b2 = b.T if ctx.attr(node, "transB", 0) else b
        out = alpha * (a @ b2) + (beta * c if c is not None else 0)
        ctx.bind(node.output[0], np.asarray(out, dtype=np.result_type(a, b)))
        return
    weight = b if ctx.attr(node, "transB", 0) else b.T  # -> [out, in]
    weight = alpha * weight
    if c is not None:
        c = beta * np.asarray(c)
        if c.ndim == 2 and c.shape[0] != 1:
            raise ModelError(f"Gemm {node.name!r}: bias of shape {c.shape} is not per-column")
        c = c.reshape(-1)
    ctx.bind(node.output[0], emit_linear(ctx, a, weight, c))


@converter("MatMul", 1)
def matmul(ctx: ConvertContext, node) -> None:
    a, b = ctx.value(node.input[0]), ctx.value(node.input[1])
    if not isinstance(a, Dyn) and not isinstance(b, Dyn):
        ctx.bind(node.output[0], np.matmul(a, b))
        return
    if isinstance(a, Dyn) and not isinstance(b, Dyn) and np.ndim(b) == 2:
        x = a if a.rank >= 2 else reshape_value(ctx, a, (1,) + a.shape)
        y = emit_linear(ctx, x, np.asarray(b).T, None)
        if a.rank == 1:
            y = reshape_value(ctx, y, y.shape[1:])
        ctx.bind(node.output[0], y)
        return
    raise ModelError(f"MatMul {node.name!r}: this operand combination is not supported yet")
