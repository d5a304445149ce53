"""Second opinion for the differential check: the ONNX semantics of a value in float64.

When our value of a segment lies beyond the allowance around onnxruntime's float32 value, the
cause may be onnxruntime's own rounding in a structure our allowance does not model: its
BatchNormalization computes ``bias - mean * scale / sqrt(var + eps)`` in float32, a
difference of large terms, where our importer folds the constants in float64 (measured: 13 of
287 random models with a standalone BatchNorm beyond 2x the allowance, up to 4x). Here the
ONNX nodes between onnxruntime's exposed values and the disputed value are evaluated by the
ONNX reference evaluator in float64, from the same inputs our segment read: that is what the
ONNX graph *means*, free of any float32 kernel. A faithful import agrees with it within the
allowance (our constants are float32 roundings of its float64 ones, which the allowance
counts); a wrong import does not.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)


def reference_values(model, target: str, available: set[str], points: np.ndarray,
                     stop: float | None = None):
    """ONNX value ``target`` at ``points`` ([B, n_in]) as ``[B, size]`` float64, evaluated from
    onnxruntime's values of ``available`` ONNX names; None when the reference evaluator cannot
    (an op it lacks, a non-float type it would need) or ``time.monotonic()`` passes ``stop``
    (the evaluator is plain numpy: slow on large convolutions)."""
    from onnx.reference import ReferenceEvaluator

    from verifier.onnx_import.ort import input_feeds, session_exposing

    proto = onnx.load_model_from_string(model.onnx_bytes)
    feeds_known = set(model.input_names) | available
    nodes, needed = _segment(proto.graph, target, feeds_known)
    if nodes is None:
        return None
    session = session_exposing(model, sorted(available))
    names = [o.name for o in session.get_outputs()]
    try:
        evaluator = ReferenceEvaluator(_double_model(proto, nodes, needed, target),
                                       new_ops=[_inference_batch_norm()])
        rows = []
        for point in points:
            if stop is not None and time.monotonic() > stop:
                log.debug("check: no time left for a float64 reference of %r", target)
                return None
            feeds = input_feeds(model, point[None])
            values = {**feeds, **dict(zip(names, session.run(None, feeds), strict=True))}
            inputs = {n: _as_double(values[n]) for n in needed}
            rows.append(np.asarray(evaluator.run([target], inputs)[0], np.float64).reshape(-1))
        return np.stack(rows)
    except Exception as exc:  # noqa: BLE001 - no second opinion; the refusal stands
        log.debug("check: no float64 reference for %r (%s)", target, exc)
        return None


def _segment(graph, target: str, known: set[str]):
    """The ONNX nodes that compute ``target`` from ``known`` values and initializers (in graph
    order) and the known values they read; (None, None) if some input is out of reach."""
    producer = {out: node for node in graph.node for out in node.output}
    constants = {t.name for t in graph.initializer}
    chosen, needed, stack = set(), set(), [target]
    while stack:
        name = stack.pop()
        if name in known and name != target:
            needed.add(name)
            continue
        if name in constants or name == "":
            continue
        node = producer.get(name)
        if node is None:
            return None, None
        if id(node) not in chosen:
            chosen.add(id(node))
            stack.extend(node.input)
    return [n for n in graph.node if id(n) in chosen], needed


def _double_model(proto, nodes, needed: set[str], target: str) -> onnx.ModelProto:
    """A model of ``nodes`` with float32 constants and casts made float64."""
    used = {name for node in nodes for name in node.input}
    inits = [_double_tensor(t) for t in proto.graph.initializer if t.name in used]
    graph = helper.make_graph(
        [_double_node(n) for n in nodes], "segment",
        [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in sorted(needed)],
        [helper.make_tensor_value_info(target, TensorProto.UNDEFINED, None)], inits)
    return helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)


def _double_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type != TensorProto.FLOAT:
        return tensor
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _double_node(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    for attr in out.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            attr.t.CopyFrom(_double_tensor(attr.t))
        elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.DOUBLE
    return out


def _inference_batch_norm():
    """BatchNormalization in inference form: the reference evaluator's version for opsets
    9-13 fills in the default momentum and then mixes the batch's own statistics in, which
    is not what onnxruntime (or the ONNX spec for the Y output) computes."""
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, **_ignored):
            eps = 1e-5 if epsilon is None else epsilon
            shape = (-1,) + (1,) * (x.ndim - 2)
            y = ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
                 * scale.reshape(shape) + bias.reshape(shape))
            return (y.astype(x.dtype),)

    return BatchNormalization


def _as_double(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    return value.astype(np.float64) if value.dtype == np.float32 else value
