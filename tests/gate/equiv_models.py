"""Tiny ONNX models with known equivalence answers (shared by the gate tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def affine_model(path: Path, w: np.ndarray, b: np.ndarray, relu_scale: float | None = None) -> str:
    """``y = W x + b`` (then ``relu(relu_scale * y)`` when given), x [1, n], y [1, m]."""
    m, n = w.shape
    inits = [numpy_helper.from_array(np.asarray(w.T, np.float32), "W"),
             numpy_helper.from_array(np.asarray(b, np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["z" if relu_scale else "y"])]
    if relu_scale is not None:
        inits.append(numpy_helper.from_array(np.float32(relu_scale).reshape(1), "S"))
        nodes += [helper.make_node("Mul", ["z", "S"], ["zs"]),
                  helper.make_node("Relu", ["zs"], ["y"])]
    graph = helper.make_graph(nodes, "affine",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def float16_affine_model(path: Path, w: np.ndarray, b: np.ndarray) -> str:
    """``y = W x + b`` computed in float16 throughout (float16 input, weights and output)."""
    m, n = w.shape
    half = TensorProto.FLOAT16
    inits = [numpy_helper.from_array(np.asarray(w.T, np.float16), "W"),
             numpy_helper.from_array(np.asarray(b, np.float16), "B")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["y"])]
    graph = helper.make_graph(nodes, "affine16",
                              [helper.make_tensor_value_info("x", half, [1, n])],
                              [helper.make_tensor_value_info("y", half, [1, m])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)
