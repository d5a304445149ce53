"""Loop unrolled at import (``converters/control_flow.py``): agreement with onnxruntime for
tf2onnx's while loops and counted loops, and refusals that name the reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.onnx_import.onnx_util import compare
from tests.onnx_import.op_models import loop_model
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.loader import import_proto


def _import(model: onnx.ModelProto):
    data = model.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


@pytest.mark.parametrize("style", ["while", "count"])
@pytest.mark.parametrize("steps", [1, 2])
def test_loop_agrees_with_onnxruntime(style, steps):
    compare(loop_model(style, steps=steps), n=8, low=-1.5, high=1.5)


def test_loop_unrolls_each_iteration_and_drops_the_body_names():
    imported = _import(loop_model("while"))
    assert sum(n.op == "Tanh" for n in imported.graph.nodes) == 2  # one cell per step
    body_names = {"xt", "xw", "hu", "pre", "pre_b", "h_out", "h_scan", "cond_out", "next", "i",
                  "cond_in", "h_in"}
    assert not body_names & set(imported.value_names), "body values are not outer values"


def test_a_loop_that_stops_before_its_trip_count():
    """Trip count 5, a condition (i + 1 < 2) that stops it after 2 iterations."""
    model = loop_model("while", steps=2)
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(5, np.int64), "five"))
    loop.input[0] = "five"
    compare(model, n=4, low=-1.5, high=1.5)


def test_an_input_dependent_condition_is_refused_by_name():
    with pytest.raises(UnsupportedOpError, match="'Loop'.*cell_loop.*input-dependent loop "
                                                 "condition"):
        _import(loop_model("count", condition="state"))


def test_an_input_dependent_trip_count_is_refused_by_name():
    model = loop_model("count")
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    model.graph.node.insert(0, helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0))
    model.graph.node.insert(1, helper.make_node("Cast", ["total"], ["trips"],
                                                to=TensorProto.INT64))
    loop.input[0] = "trips"
    with pytest.raises(UnsupportedOpError, match="input-dependent trip count"):
        _import(model)


def test_a_trip_count_above_the_unroll_limit_is_refused_before_unrolling():
    model = loop_model("count", steps=2)
    for init in model.graph.initializer:
        if init.name == "limit":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(100000, np.int64), "limit"))
    with pytest.raises(UnsupportedOpError, match="trip count of 100000"):
        _import(model)
