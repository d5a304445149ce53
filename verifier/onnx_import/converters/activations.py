"""Elementwise activations and Softmax.

Unary ops map one-to-one to the IR op of the same name; LeakyRelu(alpha), Elu(alpha),
Clip(min, max) and Gelu(approximate) carry their parameters as attributes (an Elu alpha its rule
does not handle is refused with the rule's reason).
"""

from __future__ import annotations

import numpy as np

from bounds.rules.elu import alpha_problem
from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis, unsupported
from verifier.onnx_import.converters.shape import reshape_value
from verifier.onnx_import.registry import converter

UNARY_OPS = ("Relu", "Abs", "Sign", "Floor", "Sigmoid", "Tanh", "Atan", "Erf", "Sin", "Cos",
             "Exp", "Log", "Reciprocal", "Sqrt")


def unary(op: str, attrs_of=None):
    """Converter for an elementwise unary op (constant inputs are folded by the loader)."""

    def convert(ctx: ConvertContext, node) -> None:
        x = ctx.value(node.input[0])
        attrs = attrs_of(ctx, node) if attrs_of else None
        ctx.bind(node.output[0], ctx.emit(op, [x], x.shape, attrs))

    return convert


for _op in UNARY_OPS:
    for _version in (1, 6, 13):
        converter(_op, _version)(unary(_op))

_leaky = unary("LeakyRelu", lambda ctx, n: {"alpha": float(ctx.attr(n, "alpha", 0.01))})
converter("LeakyRelu", 1)(_leaky)
converter("LeakyRelu", 6)(_leaky)
converter("LeakyRelu", 16)(_leaky)
# Softplus 22 only widens the element types
converter("Softplus", 1)(unary("Softplus"))
converter("Softplus", 22)(unary("Softplus"))


def _elu_attrs(ctx: ConvertContext, node) -> dict:
    alpha = float(ctx.attr(node, "alpha", 1.0))
    problem = alpha_problem(alpha)
    if problem:
        raise unsupported(node, problem)
    return {"alpha": alpha}


_elu = unary("Elu", _elu_attrs)
for _version in (1, 6, 22):
    converter("Elu", _version)(_elu)

converter("Gelu", 20)(unary("Gelu", lambda ctx, n: {"approximate": ctx.attr(n, "approximate",
                                                                              "none")}))


def _clip_bounds(ctx: ConvertContext, node) -> dict:
    if ctx.opset < 11:
        low = ctx.attr(node, "min", -3.4028234663852886e38)
        high = ctx.attr(node, "max", 3.4028234663852886e38)
    else:
        low = ctx.optional_const(node, 1, -np.inf)
        high = ctx.optional_const(node, 2, np.inf)
    low, high = float(np.ravel(low)[0]), float(np.ravel(high)[0])
    # float32 max stands for "no bound" in older exporters.
    return {"min": -np.inf if low <= -3.4e38 else low, "max": np.inf if high >= 3.4e38 else high}


_clip_const = unary("Clip", _clip_bounds)


def _clip(ctx: ConvertContext, node) -> None:
    """Constant ends: one Clip node; an input-dependent end: min(max(x, lo), hi), ONNX's
    definition (hi wherever lo > hi), a dynamic end as a max (min) of the stacked pair and a
    constant one as a Clip: clamped values are the end itself, so ties stay ties."""
    from verifier.onnx_import.converters.arithmetic import stacked_extreme

    ends = [ctx.optional(node, k) for k in (1, 2)] if ctx.opset >= 11 else [None, None]
    if not any(isinstance(v, Dyn) for v in ends):
        _clip_const(ctx, node)
        return
    y = ctx.value(node.input[0])
    low, high = ends
    if low is not None:
        y = stacked_extreme(ctx, y, low, largest=True)
    if isinstance(high, Dyn):
        y = stacked_extreme(ctx, y, high, largest=False)
    elif high is not None:
        y = ctx.emit("Clip", [y], y.shape, {"min": -np.inf,
                                             "max": float(np.ravel(high)[0])})
    ctx.bind(node.output[0], y)


for _version in (1, 6, 11, 12, 13):
    converter("Clip", _version)(_clip)


@converter("Softmax", 1)
def softmax(ctx: ConvertContext, node) -> None:
    """Opset < 13 coerces the input to 2-D at ``axis``; 13+ normalises along one axis."""
    x = ctx.value(node.input[0])
    if not isinstance(x, Dyn):
        raise ModelError(f"Softmax node {node.name!r} on a constant should have been folded")
    if ctx.opset >= 13:
        axis = normalize_axis(ctx.attr(node, "axis", -1), x.rank)
        ctx.bind(node.output[0], ctx.emit("Softmax", [x], x.shape, {"axis": axis}))
        return
    axis = normalize_axis(ctx.attr(node, "axis", 1), x.rank)
    if axis == x.rank - 1:
        ctx.bind(node.output[0], ctx.emit("Softmax", [x], x.shape, {"axis": axis}))
        return
    flat = (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
    y = ctx.emit("Softmax", [reshape_value(ctx, x, flat)], flat, {"axis": 1})
    ctx.bind(node.output[0], reshape_value(ctx, y, x.shape))


converter("Softmax", 13)(softmax)
