"""Constant folding of ONNX nodes whose inputs are all constants.

Cheap, common ops (the shape arithmetic that exporters emit) are folded with numpy; anything
else runs through ``onnx.reference.ReferenceEvaluator`` on a one-node model, so every standard
op folds without a hand-written numpy version.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from verifier.errors import ModelError


def _numpy_fold(ctx, node, args: list) -> list[np.ndarray] | None:
    op = node.op_type
    if op in ("Identity", "Dropout") and args:
        return [args[0]]
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(ctx.attr(node, "to"))
        return [np.asarray(args[0]).astype(to)]
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
    outs = _numpy_fold(ctx, node, args)
    if outs is None:
        outs = reference_fold(ctx, node, args)
    for name, value in zip(node.output, outs, strict=False):
        if name:
            ctx.bind(name, np.asarray(value))


def reference_fold(ctx, node: onnx.NodeProto, args: list) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    try:
        return list(ReferenceEvaluator(model).run(None, feeds))
    except Exception as exc:
        raise ModelError(
            f"cannot fold constant {node.op_type} node {node.name!r}: {type(exc).__name__}: {exc}"
        ) from None
