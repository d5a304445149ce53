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


def _count_loop_with_limit(limit: int):
    """``loop_model("count")`` with its trip-count initializer set to ``limit``."""
    model = loop_model("count", steps=2)
    for init in model.graph.initializer:
        if init.name == "limit":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(limit, np.int64), "limit"))
    return model


def test_a_trip_count_above_the_unroll_limit_is_refused_before_unrolling():
    model = _count_loop_with_limit(100000)
    with pytest.raises(UnsupportedOpError, match="trip count of 100000"):
        _import(model)


def _list_loop_model(steps: int = 3):
    """TorchScript's form of ``outs = []; for t in range(T): h = tanh(x_t w + h u);
    outs.append(h)`` then ``torch.stack(outs, 1)``: SequenceEmpty, a Loop carrying h and the
    list (SequenceInsert in the body), ConcatFromSequence with a new axis."""
    from onnx import numpy_helper

    from tests.onnx_import.onnx_util import make_model

    rng = np.random.default_rng(8)
    seq_type = helper.make_tensor_sequence_value_info
    body = helper.make_graph(
        [helper.make_node("Gather", ["xs", "i"], ["xt"], axis=1),
         helper.make_node("MatMul", ["xt", "w"], ["xw"]),
         helper.make_node("MatMul", ["h_in", "u"], ["hu"]),
         helper.make_node("Add", ["xw", "hu"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]),
         helper.make_node("SequenceInsert", ["list_in", "h_out"], ["list_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 2]),
         seq_type("list_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 2]),
         seq_type("list_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.uniform(-1, 1, (2, 2)).astype(np.float32), "u")])
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["xs"]),
             helper.make_node("SequenceEmpty", [], ["outs"], dtype=TensorProto.FLOAT),
             helper.make_node("Loop", ["trips", "", "h0", "outs"], ["h_last", "outs_last"],
                              name="list_loop", body=body),
             helper.make_node("ConcatFromSequence", ["outs_last"], ["stacked"], axis=1,
                              new_axis=1),
             helper.make_node("Reshape", ["stacked", "flat"], ["y"])]
    inits = {"shape": np.array([1, steps, 2], np.int64), "trips": np.array(steps, np.int64),
             "h0": np.zeros((1, 2), np.float32),
             "w": rng.uniform(-1, 1, (2, 2)).astype(np.float32),
             "flat": np.array([1, 2 * steps], np.int64)}
    return make_model(nodes, {"x": (1, 2 * steps)}, ["y"], inits)


@pytest.mark.parametrize("steps", [1, 3])
def test_a_list_grown_in_a_loop_agrees_with_onnxruntime(steps):
    """(the body's own initializer ``u`` is read each iteration; the list is a carried
    sequence)"""
    compare(_list_loop_model(steps), n=8, low=-1.5, high=1.5)


def test_sequence_positions_are_checked_and_must_be_constant():
    from tests.onnx_import.onnx_util import make_model

    def model(position, dynamic=False):
        nodes = [helper.make_node("SplitToSequence", ["x"], ["parts"], axis=1, keepdims=0)]
        if dynamic:
            nodes += [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                      helper.make_node("Cast", ["s"], ["p"], to=TensorProto.INT64)]
        nodes.append(helper.make_node("SequenceAt", ["parts", "p"], ["y"], name="pick"))
        inits = {} if dynamic else {"p": np.array(position, np.int64)}
        return make_model(nodes, {"x": (1, 4)}, ["y"], inits)

    compare(model(-4), n=4)  # the first of 4 pieces, counted from the end
    with pytest.raises(Exception, match="position 4 outside a sequence of 4"):
        _import(model(4))
    with pytest.raises(UnsupportedOpError, match="'SequenceAt'.*input-dependent position"):
        _import(model(0, dynamic=True))


@pytest.mark.parametrize("split,keepdims", [(None, 0), (None, 1), (3, 1), ([1, 3], 1)])
def test_split_to_sequence_agrees_with_onnxruntime(split, keepdims):
    from tests.onnx_import.onnx_util import make_model

    stack = split is None and not keepdims  # (pieces of [1]: stacked back along a new axis)
    inputs = ["x"] + ([] if split is None else ["sizes"])
    inits = {} if split is None else {"sizes": np.array(split, np.int64)}
    nodes = [helper.make_node("SplitToSequence", inputs, ["parts"], axis=1, keepdims=keepdims),
             helper.make_node("ConcatFromSequence", ["parts"], ["y"], axis=0 if stack else 1,
                              new_axis=int(stack))]
    compare(make_model(nodes, {"x": (1, 4)}, ["y"], inits), n=4)


@pytest.mark.parametrize("input_direction,output_direction,output_axis",
                         [(0, 0, 1), (1, 0, 1), (0, 1, 0), (1, 1, -1)])
def test_scan_agrees_with_onnxruntime(input_direction, output_direction, output_axis):
    from tests.onnx_import.op_models import scan_model

    compare(scan_model(input_direction, output_direction, output_axis), n=8, low=-1.5,
            high=1.5)


def test_a_while_loop_with_an_int64_max_trip_count_stops_at_its_condition():
    """(torch writes INT64_MAX as the trip count of a while loop; the body's condition
    stops it, as onnxruntime runs it)"""
    model = loop_model("while", steps=2)
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    model.graph.initializer.append(onnx.numpy_helper.from_array(
        np.array(2**63 - 1, np.int64), "forever"))
    loop.input[0] = "forever"
    compare(model, n=4, low=-1.5, high=1.5)


def test_a_loop_whose_unrolled_copies_exceed_the_node_budget_is_refused():
    """2000 iterations of an 8-node body: above the 8192 body-node copies unrolled at import
    (import time grows with the copies; the load-time estimate cannot see them)."""
    model = _count_loop_with_limit(2000)
    with pytest.raises(UnsupportedOpError, match="trip count of 2000, more than the 1024"):
        _import(model)
