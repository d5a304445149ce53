"""ONNX models built from numpy weights, shared by test suites."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def gemm_relu_mlp(layers: list[tuple[np.ndarray, np.ndarray]], batch: int | str = 1,
                  opset: int = 13) -> onnx.ModelProto:
    """Gemm/Relu MLP (no Relu after the last layer), input ``x`` [batch, n_in], output ``y``.

    Weights are ``(W [out, in], b [out])`` pairs stored as float32 initializers.
    """
    n_in, n_out = layers[0][0].shape[1], layers[-1][0].shape[0]
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(np.asarray(w, np.float32), f"w{i}"),
                  numpy_helper.from_array(np.asarray(b, np.float32), f"b{i}")]
        out = "y" if i == len(layers) - 1 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], transB=1))
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def bad_initializer_model(kind: str) -> onnx.ModelProto:
    """X + C with a malformed initializer C: ``short`` (raw data shorter than its dims),
    ``wrapping`` (dims 2^32 x 2^32, whose numpy product wraps to 0) or ``dtype`` (data type
    999)."""
    c = numpy_helper.from_array(np.ones((1, 2), np.float32), "C")
    if kind == "short":
        c.raw_data = b"\0\0"
    elif kind == "wrapping":
        del c.dims[:]
        c.dims.extend([1 << 32, 1 << 32])
    elif kind == "dtype":
        c.data_type = 999
    else:
        raise ValueError(f"unknown kind {kind!r}")
    graph = helper.make_graph([helper.make_node("Add", ["X", "C"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model
