"""The Softmax intervals that ``bound_spec`` adds from a plain IBP pass (``_with_softmax_ibp``)
only refine: that pass once ran through the whole graph, and where IBP alone let a LayerNorm's
variance reach 0 (the Reciprocal after its square root has no bound there) it stopped the
bound pass of a model CROWN bounds well (torch's TransformerEncoderLayer under the dynamo
exporter: attacked only). Here z = x + x W + c with W = -(1 - d) I: IBP doubles the box's
width, CROWN keeps z exact up to d, so only CROWN sees the variance of c."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine.forward import run_graph
from bounds.engine.ibp import ibp_bounds
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.rules.tangents import DomainError
from bounds.types import Interval
from verifier.onnx_import.loader import import_proto

WIDTH = 4


def _model(softmax_first: bool):
    """Softmax(x) beside LN(z) (the Softmax earlier in graph order), or Softmax(LN(z))."""
    inits = {"w": -(1 - 0.01) * np.eye(WIDTH), "c": np.linspace(0, 0.3, WIDTH),
             "g": np.ones(WIDTH), "b": np.zeros(WIDTH)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["x", "xw"], ["s"]),
             helper.make_node("Add", ["s", "c"], ["z"]),
             helper.make_node("LayerNormalization", ["z", "g", "b"], ["n"], axis=-1)]
    if softmax_first:
        nodes.insert(0, helper.make_node("Softmax", ["x"], ["p"], axis=-1))
        nodes.append(helper.make_node("Concat", ["n", "p"], ["y"], axis=-1))
    else:
        nodes.append(helper.make_node("Softmax", ["n"], ["y"], axis=-1))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    data = proto.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data).graph


@pytest.mark.parametrize("softmax_first", [True, False])
def test_an_ibp_domain_error_past_the_softmax_does_not_stop_the_bound(softmax_first):
    graph = _model(softmax_first)
    box = Interval(torch.full((1, 1, WIDTH), -2.0, dtype=torch.float64),
                   torch.full((1, 1, WIDTH), 2.0, dtype=torch.float64))
    with pytest.raises(DomainError):  # the case: IBP alone has no bound for this graph
        ibp_bounds(graph, box)
    n_out = graph.outputs[0].shape[-1]
    coef = torch.eye(n_out, dtype=torch.float64).unsqueeze(0)
    lower = bound_spec(graph, box, coef, torch.zeros(1, n_out, dtype=torch.float64),
                       BoundOptions(method="crown")).lower
    assert torch.isfinite(lower).all()
    xs = box.lower + (box.upper - box.lower) * torch.rand(500, 1, WIDTH, dtype=torch.float64)
    ys = run_graph(graph, xs.reshape(500, 1, WIDTH))[0].reshape(500, -1)
    assert (ys >= lower.reshape(1, -1) - 1e-9).all()
