"""Comparisons, boolean logic, Where, Cast, ArgMax/ArgMin and OneHot on input-dependent values.

Booleans and integers live in the IR's float tensors as exact values (0/1 for booleans); the
rules (bounds/rules/logic.py, bounds/rules/discrete.py) give exact intervals where the input
range fixes the result. Rewrites that keep the IR small:
Less(a, b) = Greater(b, a); LessOrEqual(a, b) = GreaterOrEqual(b, a); Not x = 1 - x (x is 0/1);
Xor(a, b) = Not(Equal(a, b)); ArgMin(x) = ArgMax(-x) (same tie rule: the first index);
Where with a constant condition stays an affine Where, else it becomes Select.
IsNaN and IsInf are step ops of their own (0 wherever the input's interval is finite).
Cast between float types is the identity (float64/float32) or a rounding node (float16,
bfloat16); to integer types it truncates toward zero, to bool it tests x != 0.
"""

from __future__ import annotations

import numpy as np
import onnx

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.registry import converter

_T = onnx.TensorProto
_IDENTITY_FLOATS = (_T.FLOAT, _T.DOUBLE)
_NARROW_FLOATS = {_T.FLOAT16: "float16", _T.BFLOAT16: "bfloat16"}
_INT_TYPES = (_T.INT8, _T.UINT8, _T.INT16, _T.UINT16, _T.INT32, _T.UINT32, _T.INT64, _T.UINT64)


def _bool_operand(value):
    """A constant operand of a comparison or logic op, as float (booleans as 0/1)."""
    return value if isinstance(value, Dyn) else np.asarray(value, dtype=np.float64)


def _compare(ir_op: str, swap: bool = False):
    def convert(ctx: ConvertContext, node) -> None:
        a, b = (_bool_operand(ctx.value(n)) for n in node.input[:2])
        if swap:
            a, b = b, a
        ctx.bind(node.output[0], emit_broadcast(ctx, ir_op, [a, b]))

    return convert


for _onnx_op, _ir_op, _swap in (("Equal", "Equal", False), ("Greater", "Greater", False),
                                ("Less", "Greater", True), ("And", "And", False),
                                ("Or", "Or", False)):
    converter(_onnx_op, 1)(_compare(_ir_op, _swap))
converter("GreaterOrEqual", 12)(_compare("GreaterOrEqual"))
converter("LessOrEqual", 12)(_compare("GreaterOrEqual", swap=True))


def _negate(ctx: ConvertContext, x: Dyn) -> Dyn:
    """1 - x for a 0/1 value x."""
    return ctx.emit("Sub", [np.ones((1,) * x.rank), x], x.shape)


@converter("Not", 1)
def logical_not(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], _negate(ctx, ctx.value(node.input[0])))


@converter("Xor", 1)
def logical_xor(ctx: ConvertContext, node) -> None:
    a, b = (_bool_operand(ctx.value(n)) for n in node.input[:2])
    ctx.bind(node.output[0], _negate(ctx, emit_broadcast(ctx, "Equal", [a, b])))


@converter("IsNaN", 9)
def is_nan(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], ctx.emit("IsNaN", [x], x.shape))


@converter("IsInf", 10)
def is_inf(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    attrs = {k: int(ctx.attr(node, k, 1)) for k in ("detect_negative", "detect_positive")}
    ctx.bind(node.output[0], ctx.emit("IsInf", [x], x.shape, attrs))


for _version in (13, 20):
    converter("IsNaN", _version)(is_nan)
converter("IsInf", 20)(is_inf)


@converter("Where", 9)
def where(ctx: ConvertContext, node) -> None:
    cond, x, y = (ctx.value(n) for n in node.input)
    if isinstance(cond, Dyn):
        ctx.bind(node.output[0], emit_broadcast(ctx, "Select", [cond, x, y]))
        return
    ctx.bind(node.output[0], emit_broadcast(ctx, "Where", [np.asarray(cond, dtype=bool), x, y]))


def _int_range(to: int) -> tuple[float, float]:
    info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(to))
    return float(info.min), float(info.max)


@converter("Cast", 1)
def cast(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    to = ctx.attr(node, "to")
    if to in _IDENTITY_FLOATS:
        ctx.bind(node.output[0], x)
        return
    if to in _NARROW_FLOATS:
        attrs = {"to": _NARROW_FLOATS[to]}
    elif to in _INT_TYPES:
        low, high = _int_range(to)
        via = 64 if to in (_T.UINT32, _T.INT64, _T.UINT64) else 32  # onnxruntime's path
        attrs = {"to": "int", "min": low, "max": high, "via": via}
    elif to == _T.BOOL:
        attrs = {"to": "bool"}
    else:
        name = onnx.TensorProto.DataType.Name(to) if to in _T.DataType.values() else str(to)
        raise unsupported(node, f"cast of an input-dependent value to {name}")
    ctx.bind(node.output[0], ctx.emit("Cast", [x], x.shape, attrs))


def _arg_extreme(sign: float):
    def convert(ctx: ConvertContext, node) -> None:
        x = ctx.value(node.input[0])
        axis = normalize_axis(int(ctx.attr(node, "axis", 0)), x.rank)
        keep = int(ctx.attr(node, "keepdims", 1))
        last = int(ctx.attr(node, "select_last_index", 0))
        if sign < 0:
            x = ctx.emit("Neg", [x], x.shape)
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape)
                      if keep or i != axis)
        attrs = {"axis": axis, "keepdims": keep, "last": last}
        ctx.bind(node.output[0], ctx.emit("ArgMax", [x], shape, attrs))

    return convert


converter("ArgMax", 1)(_arg_extreme(1.0))
converter("ArgMin", 1)(_arg_extreme(-1.0))


@converter("OneHot", 9)
def one_hot(ctx: ConvertContext, node) -> None:
    index = ctx.value(node.input[0])
    depth = np.ravel(ctx.const(node.input[1], f"depth of OneHot {node.name!r}"))
    values = np.ravel(ctx.const(node.input[2], f"values of OneHot {node.name!r}"))
    if depth.size != 1 or values.size != 2:
        raise ModelError(f"OneHot node {node.name!r}: depth must be a scalar and values a pair")
    depth = int(depth[0])
    if depth <= 0:
        raise ModelError(f"OneHot node {node.name!r}: depth {depth} must be positive")
    rank = index.rank + 1
    axis = normalize_axis(int(ctx.attr(node, "axis", -1)), rank)
    shape = index.shape[:axis] + (depth,) + index.shape[axis:]
    attrs = {"depth": depth, "axis": axis, "off": float(values[0]), "on": float(values[1])}
    ctx.bind(node.output[0], ctx.emit("OneHot", [index], shape, attrs))

