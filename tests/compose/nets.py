"""Tiny ONNX models whose answers are known by construction (for the compose tests)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
                               for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def relu_net(w1, b1, w2, b2, opset: int = OPSET) -> onnx.ModelProto:
    """x[1,n] -> pre = x w1^T + b1 -> h = Relu(pre) (value "h") -> y = h w2^T + b2 [1,m]."""
    w1, w2 = np.asarray(w1, np.float32), np.asarray(w2, np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["pre"], transB=1),
             helper.make_node("Relu", ["pre"], ["h"]),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)]
    return _model(nodes, [_vi("x", [1, w1.shape[1]])], [_vi("y", [1, w2.shape[0]])],
                  {"w1": w1, "b1": b1, "w2": w2, "b2": b2}, opset)


def affine_net(w, b, opset: int = OPSET) -> onnx.ModelProto:
    """x[1,n] -> y = x w^T + b [1,m]."""
    w = np.asarray(w, np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    return _model(nodes, [_vi("x", [1, w.shape[1]])], [_vi("y", [1, w.shape[0]])],
                  {"w": w, "b": b}, opset)


def two_io_net() -> onnx.ModelProto:
    """Inputs a[1,2], b[1,1]; outputs s = a0 + a1 + b ([1,1]) and d = Relu(a - b) ([1,2])."""
    nodes = [helper.make_node("ReduceSum", ["a", "axes"], ["sa"], keepdims=1),
             helper.make_node("Add", ["sa", "b"], ["s"]),
             helper.make_node("Sub", ["a", "b"], ["diff"]),
             helper.make_node("Relu", ["diff"], ["d"])]
    graph = helper.make_graph(nodes, "g", [_vi("a", [1, 2]), _vi("b", [1, 1])],
                              [_vi("s", [1, 1]), _vi("d", [1, 2])],
                              [numpy_helper.from_array(np.asarray([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
