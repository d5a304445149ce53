"""Constant, Identity, Dropout, Shape, Size, If on a constant condition, and the constant-only
ConstantOfShape and Range."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of, tensor_array, unsupported
from verifier.onnx_import.registry import converter


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


def _const_only(ctx: ConvertContext, node) -> None:
    """Ops whose output shape would depend on input values: only their constant form (folded
    at import) is supported, and ``supports`` does not list them."""
    raise unsupported(node, "an input-dependent operand would make the output's shape depend"
                      " on the input; only a constant one (folded at import) is supported")


for _op in ("ConstantOfShape", "Range"):
    converter(_op, 1, constant_only=True)(_const_only)


def dyn_or_none(value) -> Dyn | None:
    return value if isinstance(value, Dyn) else None


@converter("If", 1)
def if_(ctx: ConvertContext, node) -> None:
    """The branch a constant condition picks, inlined (exporters emit If on shape tests, which
    fold to constants: torch's LocalResponseNorm, squeezes of possibly-1 axes). An
    input-dependent condition is refused. Names defined inside the branch are dropped
    afterwards: they are not values of the outer graph (onnxruntime cannot expose them)."""
    from verifier.onnx_import.loader import convert_nodes

    cond = ctx.const(node.input[0], f"the condition of If node {node.name!r}")
    if np.size(cond) != 1:
        raise unsupported(node, f"a condition of {np.size(cond)} elements (1 expected)")
    branch = ctx.attr(node, "then_branch" if bool(np.ravel(cond)[0]) else "else_branch")
    if branch is None or len(branch.output) != len(node.output):
        raise ModelError(f"If node {node.name!r}: its branch does not give its "
                         f"{len(node.output)} output(s)")
    outer = set(ctx.values)
    defined = [t.name for t in branch.initializer] + [o for n in branch.node for o in n.output]
    clash = next((name for name in defined if name and name in outer), None)
    if clash is not None:  # (ONNX names are unique model-wide; inlining relies on it)
        raise ModelError(f"If node {node.name!r}: its branch redefines the outer value "
                         f"{clash!r}")
    for t in branch.initializer:
        ctx.bind(t.name, tensor_array(t, "initializer").copy())
    convert_nodes(ctx, branch.node)
    results = [ctx.value(v.name) for v in branch.output]
    for name in set(ctx.values) - outer:
        del ctx.values[name]
    for name, value in zip(node.output, results, strict=True):
        if name:
            ctx.bind(name, value)
