"""Constant folding of ONNX nodes whose inputs are all constants.

Cheap, common ops (the shape arithmetic that exporters emit) are folded with numpy; anything
else runs through ``onnx.reference.ReferenceEvaluator`` on a one-node model, so every standard
op folds without a hand-written numpy version; what the reference refuses is run by onnxruntime
(the runtime that counterexamples are checked with), which keeps some deprecated attributes.

Folding is budgeted: a few bytes of ONNX can ask for a huge constant (``ConstantOfShape`` of
``[150000000]``, an outer product of two small vectors). Before evaluating a node whose output
can outgrow its inputs, the output's element count is computed from the inputs' shapes and
values with exact Python integers, and a node above the budget is refused
(:class:`FoldTooLarge`) without allocating; every folded result is checked against the same cap.
The budget is :data:`MAX_FOLDED_ELEMENTS`, or the element count of the model's largest
initializer where that is larger (:func:`fold_budget`): the file already holds that much.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from verifier.errors import ModelError
from verifier.onnx_import.registry import ML_DOMAIN, MS_DOMAIN

MAX_FOLDED_ELEMENTS = 1 << 26  # per folded tensor (256 MiB of float32)
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Where",
                          "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And",
                          "Or", "Xor", "BitShift", "Sum", "Mean", "PRelu"})


class FoldTooLarge(ModelError):
    """A constant the model asks to fold has more elements than the folding budget."""


def _dims(value) -> list[int]:
    """A shape-like constant as exact Python integers."""
    return [int(v) for v in np.ravel(np.asarray(value))]


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The numpy broadcast of ``shapes`` (None when they do not broadcast)."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _shape_of(a) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(a))


def _resized(args: list) -> list[int] | None:
    """Output dims of Resize from its sizes or scales input."""
    if len(args) > 3 and args[3] is not None and np.size(args[3]):
        return _dims(args[3])
    if len(args) > 2 and args[2] is not None and np.size(args[2]):
        scales = np.ravel(np.asarray(args[2], dtype=np.float64))
        if not np.all(np.isfinite(scales)) or len(scales) != np.ndim(args[0]):
            return None
        return [math.floor(d * float(s)) for d, s in zip(_shape_of(args[0]), scales, strict=True)]
    return None


def _range_length(args: list) -> int | None:
    start, limit, delta = (float(np.ravel(a)[0]) for a in args[:3])
    steps = (limit - start) / delta if delta else math.nan
    return max(math.ceil(steps), 0) if math.isfinite(steps) else None


def predicted_elements(node: onnx.NodeProto, args: list) -> int | None:
    """Elements of ``node``'s (largest) output from its constant inputs, computed without
    evaluating it; None when the op's output cannot outgrow its inputs or is not predicted
    here (its result is then checked after folding)."""
    op, present = node.op_type, [a for a in args if a is not None]
    dims: list[int] | tuple[int, ...] | None = None
    if op == "ConstantOfShape" and present:
        dims = _dims(present[0])
    elif op == "Expand" and len(present) == 2:
        dims = _broadcast([_shape_of(present[0]), tuple(_dims(present[1]))])
    elif op == "Tile" and len(present) == 2:
        dims = [d * r for d, r in zip(_shape_of(present[0]), _dims(present[1]), strict=False)]
    elif op == "Range" and len(present) == 3:
        length = _range_length(present)
        dims = None if length is None else [length]
    elif op == "Resize" and present:
        dims = _resized(args)
    elif op == "MatMul" and len(present) == 2 and min(np.ndim(a) for a in present) >= 2:
        a, b = (_shape_of(x) for x in present)
        batch = _broadcast([a[:-2], b[:-2]])
        dims = None if batch is None else (*batch, a[-2], b[-1])
    elif op in BROADCASTING and len(present) > 1:
        dims = _broadcast([_shape_of(a) for a in present])
    if dims is None:
        return None
    if any(d < 0 for d in dims):
        raise ModelError(f"constant {op} node {node.name!r} asks for a negative dimension "
                         f"{list(dims)}")
    return math.prod(dims)


def fold_budget(initializers) -> int:
    """Elements one folded tensor may hold: MAX_FOLDED_ELEMENTS, or as many as the model's
    largest initializer, which its file already carries (DequantizeLinear of a VGG16's int8
    fc6 weights builds 102.8M floats; a few bytes asking for as many are still refused)."""
    return max([MAX_FOLDED_ELEMENTS, *(int(np.size(a)) for a in initializers)])


def _check_budget(ctx, node: onnx.NodeProto, elements: int) -> None:
    budget = ctx.fold_budget or MAX_FOLDED_ELEMENTS
    if elements > budget:
        raise FoldTooLarge(
            f"folding constant {node.op_type} node {node.name!r} would build a tensor of "
            f"{elements} elements, above the limit of {budget}")


def _numpy_fold(ctx, node, args: list) -> list[np.ndarray] | None:
    op = node.op_type
    if op in ("Identity", "Dropout") and args:
        return [args[0]]
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(ctx.attr(node, "to"))
        source = np.asarray(args[0])
        if np.issubdtype(to, np.integer) and np.issubdtype(source.dtype, np.floating) and (
                not np.isfinite(source).all()):
            return None  # implementation-defined: take onnxruntime's integers
        return [source.astype(to)]
    if op == "Unsqueeze" and ctx.opset >= 13:
        out = args[0]
        axes = sorted(int(a) % (out.ndim + len(args[1])) for a in np.ravel(args[1]))
        for a in axes:
            out = np.expand_dims(out, a)
        return [out]
    if op == "Concat":
        return [np.concatenate([np.asarray(a) for a in args], axis=int(ctx.attr(node, "axis")))]
    if op == "Gather":
        return [np.take(args[0], args[1], axis=int(ctx.attr(node, "axis", 0)))]
    return None


def fold_node(ctx, node: onnx.NodeProto) -> None:
    """Evaluate ``node`` on its constant inputs and bind every output to a numpy constant."""
    args = [None if name == "" else ctx.const(name) for name in node.input]
    predicted = predicted_elements(node, args)
    if predicted is not None:
        _check_budget(ctx, node, predicted)
    outs = _numpy_fold(ctx, node, args)
    if outs is None:
        outs = reference_fold(ctx, node, args)
    for name, value in zip(node.output, outs, strict=False):
        if name:
            value = np.asarray(value)
            _check_budget(ctx, node, int(value.size))
            ctx.bind(name, value)


# Ops whose floating-point results involve no rounding (data movement, selection, sign and
# order): every evaluator computes them alike, so the reference evaluator folds them.
EXACT_OPS = frozenset({
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split",
    "Slice", "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Expand",
    "Tile", "Pad", "Where", "Neg", "Abs", "Relu", "Max", "Min", "Clip", "Floor", "Ceil",
    "Round", "Sign", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And",
    "Or", "Xor", "Shape", "Size", "ConstantOfShape", "DepthToSpace", "SpaceToDepth",
    "ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "TopK", "IsNaN", "IsInf", "Compress",
    "Trilu", "EyeLike", "OneHot", "NonZero"})


def _rounds_floats(node: onnx.NodeProto, args: list) -> bool:
    """Whether ``node`` does floating-point arithmetic on its constant inputs (where two
    evaluators may round differently)."""
    return node.op_type not in EXACT_OPS and any(
        a is not None and np.issubdtype(np.asarray(a).dtype, np.floating) for a in args)


def reference_fold(ctx, node: onnx.NodeProto, args: list) -> list[np.ndarray]:
    """Outputs of ``node`` on constant ``args``. Floating-point arithmetic runs in onnxruntime
    first: the constant is then the value onnxruntime computes when it runs the model (it folds
    constant subgraphs with the same kernels), not one that differs by a rounding. A difference
    is not always one ulp of the constant: weight standardisation (BiT's BatchNormalization
    of the weights) centres them, so a weight near its mean carries the rounding of the mean,
    and the Conv reading it parted from onnxruntime by 28 x the differential check's
    allowance. The reference evaluator folds the rest, and anything onnxruntime refuses."""
    feeds = {f"in{i}": a for i, a in enumerate(args) if a is not None}
    inputs = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    outputs = [f"out{i}" for i in range(len(node.output))]
    one = helper.make_node(node.op_type, inputs, outputs, domain=node.domain)
    one.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [one], "fold",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype),
                                       None) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outputs],
    )
    runtime_error = None
    if _rounds_floats(node, args):
        try:
            return _run_onnxruntime(graph, ctx.opset, feeds, ctx.ml_opset)
        except Exception as exc:  # noqa: BLE001  (the reference may still run it)
            runtime_error = exc
    try:
        return _evaluate(graph, ctx.opset, feeds, ctx.ml_opset)
    except Exception as exc:
        first = exc
    if "No implementation for operator" in str(first):
        # The reference evaluator lacks this op's version (DequantizeLinear 13, say): the
        # newest one computes the same for the types older versions allow (the differential
        # check against onnxruntime would see a difference).
        try:
            return _evaluate(graph, onnx.defs.onnx_opset_version(), feeds, ctx.ml_opset)
        except Exception as exc:  # noqa: BLE001  (onnxruntime may still run it)
            first = exc
    # What the reference refuses, onnxruntime (whose results counterexamples are checked
    # with) may run: attributes it keeps after their deprecation (Resize's
    # tf_half_pixel_for_nn, which tf2onnx writes), ops the reference lacks. (Not twice: a
    # floating-point op it refused above is refused again.)
    if runtime_error is None:
        try:
            return _run_onnxruntime(graph, ctx.opset, feeds, ctx.ml_opset)
        except Exception as exc:  # noqa: BLE001
            runtime_error = exc
    raise _fold_error(node, first, runtime_error) from None


def _one_node_model(graph, opset: int, ml_opset: int) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid(ML_DOMAIN, ml_opset),
                                                   helper.make_opsetid(MS_DOMAIN, 1)])


def _run_onnxruntime(graph, opset: int, feeds: dict, ml_opset: int) -> list[np.ndarray]:
    """The one-node ``graph`` run by onnxruntime, in a session made as the model's own are
    (``ort.new_session``: its C++ log silenced, so a deprecated attribute prints nothing)."""
    from verifier.onnx_import.ort import new_session

    model = _one_node_model(graph, opset, ml_opset)
    for out in model.graph.output:  # onnxruntime infers the outputs' types itself
        out.type.Clear()
    session = new_session(model.SerializeToString())
    return [np.asarray(v) for v in session.run(None, feeds)]


def _evaluate(graph, opset: int, feeds: dict, ml_opset: int = 1) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(_one_node_model(graph, opset, ml_opset)).run(None, feeds))


def _fold_error(node: onnx.NodeProto, exc: Exception,
                runtime_exc: Exception | None = None) -> ModelError:
    why = f"{type(exc).__name__}: {exc}"
    if runtime_exc is not None:
        why += f"; onnxruntime: {type(runtime_exc).__name__}: {str(runtime_exc)[:300]}"
    return ModelError(f"cannot fold constant {node.op_type} node {node.name!r}: {why}")
