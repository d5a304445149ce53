"""Shape ops: Flatten, Reshape (more in later modules)."""

from __future__ import annotations

import math

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis
from verifier.onnx_import.registry import converter


def reshape_value(ctx: ConvertContext, x, shape) -> object:
    shape = tuple(int(d) for d in shape)
    if isinstance(x, Dyn):
        if shape == x.shape:
            return x
        if math.prod(shape) != math.prod(x.shape):
            raise ModelError(f"cannot reshape {x.shape} to {shape}")
        return ctx.emit("Reshape", [x], shape)
    return np.reshape(x, shape)


@converter("Flatten", 1)
def flatten(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    shape = x.shape if isinstance(x, Dyn) else np.shape(x)
    axis = normalize_axis(ctx.attr(node, "axis", 1), len(shape) + 1) if shape else 0
    target = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    ctx.bind(node.output[0], reshape_value(ctx, x, target))


def resolve_reshape(in_shape, target, allowzero: bool = False) -> tuple[int, ...]:
    target = [int(d) for d in target]
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            out.append(in_shape[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise ModelError(f"Reshape target {target} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(in_shape) // known if known else 0
    return tuple(out)


@converter("Reshape", 1)
def reshape(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    in_shape = x.shape if isinstance(x, Dyn) else np.shape(x)
    if ctx.opset < 5:
        target = ctx.attr(node, "shape")
    else:
        target = ctx.const(node.input[1], f"shape input of Reshape {node.name!r}")
    allowzero = bool(ctx.attr(node, "allowzero", 0))
    ctx.bind(node.output[0], reshape_value(ctx, x, resolve_reshape(in_shape, target, allowzero)))


converter("Reshape", 5)(reshape)
