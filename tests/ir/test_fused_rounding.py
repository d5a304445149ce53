"""Fused activations bound what onnxruntime computes for the decomposition they replace.

``fuse_swish``, ``fuse_gelu``, ``fuse_mish`` and ``fuse_hard_swish`` replace several float32
operations (a sigmoid, tanh or clip, a polynomial, products) by one node whose rounding
allowance is the fused op's (``Rounding.GENERIC_INPUT``). That is sound only if onnxruntime's
float32 result of the whole decomposition stays within the allowance of the fused node around
the exact value: measured here at 8000 float32 points from 1e-8 to 1e4 in magnitude, at every
graph optimisation level (onnxruntime's own fusions, QuickGelu and FastGelu among them, compute
differently); and onnxruntime's HardSwish and Mish kernels against their rules' real values."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from bounds.engine.rounding import rounding_error
from bounds.registry import rules
from bounds.types import Interval
from tests.onnx_import.onnx_util import make_model
from verifier.ir.passes import simplify_graph
from verifier.onnx_import.loader import import_proto

N = 8000


def _points() -> np.ndarray:
    mags = np.logspace(-8, 4, N // 4)
    dense = np.linspace(-12.0, 12.0, N // 2)
    return np.concatenate([mags, -mags, dense]).astype(np.float32)[None]


def _nodes(form: str) -> tuple[list, dict]:
    n = helper.make_node
    if form == "silu":
        return [n("Sigmoid", ["x"], ["s"]), n("Mul", ["x", "s"], ["y"])], {}
    if form == "quick_gelu":
        return ([n("Mul", ["x", "a"], ["ax"]), n("Sigmoid", ["ax"], ["s"]),
                 n("Mul", ["s", "x"], ["y"])], {"a": np.float32(1.702)})
    if form == "mish_op":
        return [n("Mish", ["x"], ["y"])], {}
    if form == "mish":
        return [n("Softplus", ["x"], ["s"]), n("Tanh", ["s"], ["t"]),
                n("Mul", ["t", "x"], ["y"])], {}
    if form == "hard_swish_op":
        return [n("HardSwish", ["x"], ["y"])], {}
    if form == "hard_sigmoid":  # ONNX's default gate (alpha 0.2)
        return [n("HardSigmoid", ["x"], ["g"]), n("Mul", ["x", "g"], ["y"])], {}
    if form == "relu6_div":
        return ([n("Add", ["x", "three"], ["s"]), n("Clip", ["s", "zero", "six"], ["g"]),
                 n("Mul", ["x", "g"], ["p"]), n("Div", ["p", "six"], ["y"])],
                {"three": np.float32(3.0), "zero": np.float32(0.0), "six": np.float32(6.0)})
    if form == "relu6_sixth":
        return ([n("Add", ["x", "three"], ["s"]), n("Clip", ["s", "zero", "six"], ["g"]),
                 n("Mul", ["g", "sixth"], ["q"]), n("Mul", ["q", "x"], ["y"])],
                {"three": np.float32(3.0), "zero": np.float32(0.0), "six": np.float32(6.0),
                 "sixth": np.float32(1 / 6)})
    if form == "gelu_erf":
        return ([n("Div", ["x", "r2"], ["d"]), n("Erf", ["d"], ["e"]),
                 n("Add", ["e", "one"], ["a"]), n("Mul", ["x", "a"], ["p"]),
                 n("Mul", ["p", "half"], ["y"])],
                {"r2": np.float32(2 ** 0.5), "one": np.float32(1.0), "half": np.float32(0.5)})
    return ([n("Pow", ["x", "three"], ["c"]), n("Mul", ["kappa", "c"], ["kc"]),
             n("Add", ["x", "kc"], ["s"]), n("Mul", ["k", "s"], ["v"]),
             n("Tanh", ["v"], ["t"]), n("Add", ["one", "t"], ["a"]),
             n("Mul", ["x", "half"], ["hx"]), n("Mul", ["hx", "a"], ["y"])],
            {"three": np.float32(3.0), "kappa": np.float32(0.044715),
             "k": np.float32((2 / np.pi) ** 0.5), "one": np.float32(1.0),
             "half": np.float32(0.5)})


LEVELS = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)


@pytest.mark.parametrize("form,op", [("silu", "Swish"), ("quick_gelu", "Swish"),
                                     ("gelu_erf", "Gelu"), ("gelu_tanh", "Gelu"),
                                     ("mish_op", "Mish"), ("mish", "Mish"),
                                     ("hard_swish_op", "HardSwish"),
                                     ("hard_sigmoid", "HardSwish"),
                                     ("relu6_div", "HardSwish"), ("relu6_sixth", "HardSwish")])
def test_runtime_decomposition_within_the_fused_allowance(form, op):
    nodes, consts = _nodes(form)
    opset = 18 if form == "mish_op" else 14 if "hard" in form else 17
    model = make_model(nodes, {"x": (1, N)}, ["y"], consts, opset=opset)
    data = model.SerializeToString()
    graph = simplify_graph(import_proto(onnx.load_model_from_string(data), data,
                                        simplify=False).graph)
    (node,) = graph.nodes
    assert node.op == op
    x = _points()
    rule = rules().get(op)
    xt = torch.from_numpy(x).double()
    exact = rule.forward(node, [xt])
    delta = rounding_error(node, rule, [Interval(xt, xt)], Interval(exact, exact), node.shape)
    for level in LEVELS:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"x": x})[0]).double()
        excess = (got - exact).abs() - delta
        worst = int(excess.argmax())
        assert float(excess.max()) <= 0.0, (level, float(x[0, worst]), float(got[0, worst]),
                                             float(exact[0, worst]), float(delta[0, worst]))
