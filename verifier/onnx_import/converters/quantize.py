"""Round, and quantisation: QuantizeLinear and DequantizeLinear with constant scales and zero
points (per tensor or per axis), the QDQ form of int8 models.

QuantizeLinear(x) = clamp(round(x / scale) + zero_point, qmin, qmax) over the integer type of
the zero point (uint8 when it is absent); DequantizeLinear(q) = (q - zero_point) scale.
Integers live in the IR's float tensors as exact values. Round is half to even (ONNX's and
onnxruntime's rule); the division's rounding allowance covers a runtime that multiplies by a
rounded reciprocal instead, and its interval then holds both sides of a tie.
"""

from __future__ import annotations

import numpy as np
import onnx

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.registry import converter

_T = onnx.TensorProto
# Integer types a quantised value may take: (lowest, highest).
_INT_RANGES = {_T.UINT8: (0, 255), _T.INT8: (-128, 127), _T.UINT16: (0, 65535),
               _T.INT16: (-32768, 32767), _T.INT32: (-2**31, 2**31 - 1)}
if hasattr(_T, "INT4"):
    _INT_RANGES.update({_T.INT4: (-8, 7), _T.UINT4: (0, 15)})


@converter("Round", 11)
def round_(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], ctx.emit("Round", [x], x.shape))


converter("Round", 22)(round_)


def _per_axis(ctx: ConvertContext, node, x: Dyn, value, what: str) -> np.ndarray:
    """A constant scale or zero point shaped to broadcast against ``x``: a scalar, or a 1-D
    tensor along ``axis`` (default 1)."""
    if isinstance(value, Dyn):
        raise unsupported(node, f"an input-dependent {what}")
    value = np.asarray(value)
    if value.size == 1:
        return value.reshape(())
    if ctx.attr(node, "block_size", 0):
        raise unsupported(node, "blocked quantisation (block_size)")
    axis = normalize_axis(int(ctx.attr(node, "axis", 1)), x.rank)
    if value.ndim != 1 or value.shape[0] != x.shape[axis]:
        raise ModelError(f"{node.op_type} node {node.name!r}: {what} of shape {value.shape} "
                         f"for axis {axis} of {x.shape}")
    return value.reshape((-1,) + (1,) * (x.rank - axis - 1))


def _zero_point(ctx: ConvertContext, node, x: Dyn) -> tuple[np.ndarray, tuple[int, int]]:
    """(zero point as float, the integer range of its type)."""
    name = node.input[2] if len(node.input) > 2 else ""
    if not name:
        return np.zeros(()), _INT_RANGES[_T.UINT8]
    elem = _elem_type(ctx, name)
    if elem not in _INT_RANGES:
        raise unsupported(node, f"a zero point of type {_T.DataType.Name(elem)} (integer "
                                "types up to 32 bits are handled)")
    return (_per_axis(ctx, node, x, ctx.value(name), "zero point").astype(np.float64),
            _INT_RANGES[elem])


def _elem_type(ctx: ConvertContext, name: str) -> int:
    value = ctx.value(name)
    dtype = np.asarray(value).dtype
    for elem, numpy_type in ((_T.UINT8, np.uint8), (_T.INT8, np.int8), (_T.UINT16, np.uint16),
                             (_T.INT16, np.int16), (_T.INT32, np.int32)):
        if dtype == numpy_type:
            return elem
    return _T.UNDEFINED


@converter("QuantizeLinear", 10)
def quantize_linear(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    scale = _per_axis(ctx, node, x, ctx.value(node.input[1]), "scale").astype(np.float32)
    if np.any(scale == 0):
        raise ModelError(f"QuantizeLinear node {node.name!r}: a scale is zero")
    zero, (low, high) = _zero_point(ctx, node, x)
    q = ctx.emit("Round", [emit_broadcast(ctx, "Div", [x, scale])], x.shape)
    if np.any(zero != 0):
        q = emit_broadcast(ctx, "Add", [q, zero.astype(np.float32)])
    ctx.bind(node.output[0], ctx.emit("Clip", [q], q.shape, {"min": float(low),
                                                             "max": float(high)}))


@converter("DequantizeLinear", 10)
def dequantize_linear(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    scale = _per_axis(ctx, node, x, ctx.value(node.input[1]), "scale").astype(np.float32)
    zero = (_per_axis(ctx, node, x, ctx.value(node.input[2]), "zero point")
            if len(node.input) > 2 and node.input[2] else np.zeros(()))
    zero = np.asarray(zero, dtype=np.float32)
    y = emit_broadcast(ctx, "Sub", [x, zero]) if np.any(zero != 0) else x
    ctx.bind(node.output[0], emit_broadcast(ctx, "Mul", [y, scale]))


for _version in (13, 19, 21):
    converter("QuantizeLinear", _version)(quantize_linear)
    converter("DequantizeLinear", _version)(dequantize_linear)
