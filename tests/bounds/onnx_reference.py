"""The onnxruntime reference of a soundness case (tests/bounds/rule_cases.py): a one-op ONNX
model that declares the op's real types, and its session.

A model that onnxruntime rejects is a broken test (wrong types, ranks or attrs) and fails; the
one exception is onnxruntime's NOT_IMPLEMENTED (no kernel for the op at these types), raised as
``NoKernel`` naming the op and its input types, which the float32 check turns into a skip.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

from tests.bounds.rule_cases import CASES, PerSample, RuleCase


def dynamic_inputs(case: RuleCase) -> dict:
    """{input position: per-sample shape} of the case's dynamic inputs."""
    return dict(case.operands) if case.operands else {case.dyn_pos: case.in_shape}


def input_name(case: RuleCase, pos: int) -> str:
    """The ONNX name of the dynamic input at ``pos``: "x", or "x<pos>" for several operands."""
    return f"x{pos}" if case.operands else "x"


def onnx_shape(case: RuleCase) -> tuple:
    """The ONNX model's per-sample input shape (merge_batch: ONNX's batch axis is our samples)."""
    return case.in_shape[1:] if case.merge_batch else case.in_shape


class NoKernel(Exception):
    """onnxruntime has no kernel for the reference model's op at these types (its
    NOT_IMPLEMENTED error): not our bug, so the float32 check skips and says which."""


def _initializer(name: str, value, double: bool) -> onnx.TensorProto:
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64 if double else np.float32)
    return onnx.numpy_helper.from_array(arr, name)


def reference_model(case: RuleCase, double: bool) -> tuple[onnx.ModelProto, str]:
    """The one-op ONNX model onnxruntime evaluates, and the op's input types (for messages).

    Dynamic inputs are float (the harness's dtype); those named in ``case.onnx_cast_in`` are
    Cast first (And/Or and Where's condition take bools); a ``PerSample`` constant gets the
    sample axis and is Expanded over the batch; a non-float output (``case.onnx_out``) is
    Cast back to float, so the model's declared types are the op's real ones."""
    elem = TensorProto.DOUBLE if double else TensorProto.FLOAT
    shapes = dict(dynamic_inputs(case)) if case.operands else {case.dyn_pos: onnx_shape(case)}
    inputs = [helper.make_tensor_value_info(input_name(case, pos), elem, [None, *shape])
              for pos, shape in sorted(shapes.items())]
    first = inputs[0].name
    nodes, names, inits, types = [], [], [], []
    for i, item in enumerate(case.onnx_inputs):
        if isinstance(item, str):
            name, kind = item, "float64" if double else "float32"
            if item in case.onnx_cast_in:
                to = case.onnx_cast_in[item]
                name = f"{item}_cast"
                nodes.append(helper.make_node("Cast", [item], [name], to=to))
                kind = helper.tensor_dtype_to_np_dtype(to).name
            names.append(name)
            types.append(kind if item else "omitted")
        elif isinstance(item, PerSample):
            value = np.asarray(item.value)[None]
            inits += [_initializer(f"c{i}", value, double),
                      onnx.numpy_helper.from_array(np.ones(value.ndim - 1, np.int64), f"o{i}")]
            nodes += [helper.make_node("Shape", [first], [f"n{i}"], start=0, end=1),
                      helper.make_node("Concat", [f"n{i}", f"o{i}"], [f"s{i}"], axis=0),
                      helper.make_node("Expand", [f"c{i}", f"s{i}"], [f"b{i}"])]
            names.append(f"b{i}")
            types.append(helper.tensor_dtype_to_np_dtype(inits[-2].data_type).name)
        else:
            inits.append(_initializer(f"c{i}", item, double))
            names.append(f"c{i}")
            types.append(helper.tensor_dtype_to_np_dtype(inits[-1].data_type).name)
    op = case.onnx_op or case.op
    raw = "raw" if case.onnx_out else "out"
    nodes.append(helper.make_node(op, names, [raw], **case.onnx_attrs))
    if case.onnx_out:
        nodes.append(helper.make_node("Cast", [raw], ["out"], to=elem))
    graph = helper.make_graph(nodes, "one", inputs,
                              [helper.make_tensor_value_info("out", elem, None)], inits)
    if case.onnx_out:  # declared, so that onnxruntime checks it is the op's output type
        graph.value_info.append(helper.make_tensor_value_info(raw, case.onnx_out, None))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 9
    return model, f"{op}({', '.join(types)})"


@functools.cache
def session(label: str, double: bool) -> ort.InferenceSession:
    """onnxruntime's session for the case's reference model. Raises ``NoKernel`` only for
    onnxruntime's NOT_IMPLEMENTED (no kernel for these types); any other error is a broken
    reference model and propagates."""
    case = next(c for c in CASES if c.label == label)
    model, signature = reference_model(case, double)
    try:
        return ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except OrtNotImplemented as err:
        raise NoKernel(f"onnxruntime {ort.__version__} has no kernel for {signature} "
                       f"(opset {case.opset}): {err}") from err
