"""The rewritten model computes what the original networks compute: slices (both Slice forms,
opset 9 and 17), gathers for shared or permuted inputs, double-precision inputs, hidden values;
and the float64 re-check refuses assignments outside the box or off the condition."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.compose.nets import relu_net, two_io_net
from verifier.compose.bind import bind_network
from verifier.compose.build import compose
from verifier.compose.check import NetworkRunner, recheck
from verifier.compose.network import flat_network
from verifier.onnx_import.ort import ort_session
from verifier.spec import parse_query

W1, B1, W2, B2 = [[1, -2], [0.5, 1]], [0.1, -0.2], [[1, 3]], [0.5]
DECL = ("(vnnlib-version <2.0>)(declare-network f (declare-input X {t} [1,2]) "
        "(declare-hidden H float32 [1,2] \"h\") (declare-output Y float32 [1,1]))"
        "(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] -1) (<= X[0,1] 1)))")


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort_session(model.SerializeToString()).run(None, feeds)


def _reference(x: np.ndarray, opset: int = 17) -> np.ndarray:
    """h and y of the original network, by onnxruntime on it with h exposed as an output."""
    model = relu_net(W1, B1, W2, B2, opset)
    model.graph.output.append(onnx.ValueInfoProto(name="h"))
    y, h = _run(model, {"x": np.asarray(x, np.float32).reshape(1, 2)})
    return np.concatenate([h.reshape(-1), y.reshape(-1)])


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("index", [[0, 1], [1, 0], [0, 0]])
def test_flat_network_matches_the_original(opset, index):
    query = parse_query(DECL.format(t="float32") + "(assert (>= H[0,0] 0))", compose=True)
    binding = bind_network(query.info.networks[0], relu_net(W1, B1, W2, B2, opset), 0)
    flat = flat_network(binding, np.asarray(index), 2, [TensorProto.FLOAT] * 2)
    onnx.checker.check_model(flat)
    z = np.array([0.3, -0.7], np.float32)
    (v,) = _run(flat, {"nncert_compose/z": z})
    np.testing.assert_array_equal(v, _reference(z[index], opset))


def test_double_input_is_cast():
    model = relu_net(W1, B1, W2, B2)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    model.graph.node.insert(0, helper.make_node("Cast", ["xd"], ["x32"], to=TensorProto.FLOAT))
    model.graph.input[0].name = "xd"
    model.graph.node[1].input[0] = "x32"
    query = parse_query(DECL.format(t="real") + "(assert (>= H[0,0] 0))", compose=True)
    binding = bind_network(query.info.networks[0], model, 0)
    flat = flat_network(binding, np.arange(2), 2, [TensorProto.FLOAT] * 2)
    z = np.array([0.25, 0.5], np.float32)
    np.testing.assert_array_equal(_run(flat, {"nncert_compose/z": z})[0],
                                  _reference(z.reshape(1, 2)))


def test_declared_float32_on_a_double_input_is_refused():
    model = relu_net(W1, B1, W2, B2)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    query = parse_query(DECL.format(t="float32") + "(assert (>= H[0,0] 0))", compose=True)
    with pytest.raises(Exception, match="declared float32 but the model's tensor is float64"):
        bind_network(query.info.networks[0], model, 0)


MIO = ("(vnnlib-version <2.0>)(declare-network n (declare-input A float32 [1,2]) "
       "(declare-input B float32 [1,1]) (declare-output S float32 [1,1]) "
       "(declare-output D float32 [1,2]))"
       "(assert (and (>= A[0,0] 0) (<= A[0,0] 1) (>= A[0,1] 0) (<= A[0,1] 1)"
       " (>= B[0,0] 0) (<= B[0,0] 1)))(assert (>= (* S[0,0] D[0,1]) 1.5))")


def test_composed_model_and_recheck():
    query = parse_query(MIO, compose=True)
    composed = compose(list(query.info.networks), {"n": two_io_net()}, query.layout)
    z = np.array([1.0, 1.0, 0.0], np.float32)  # s = 2, d = (1, 1): s * d1 = 2 >= 1.5
    (y,) = _run(composed.proto, {"nncert_compose/z": z})
    np.testing.assert_array_equal(y, [2, 1, 1, 2])
    runners = list(composed.runners)
    found = recheck(runners, query.layout, query.spec, z, 0, 0.0)
    assert found is not None and [t[0] for t in found.tensors] == ["A", "B", "S", "D"]
    assert recheck(runners, query.layout, query.spec, np.array([1, 1, 0.5]), 0, 0.0) is None
    outside = np.array([1.0, 1.0, -1e-3], np.float32)
    assert recheck(runners, query.layout, query.spec, outside, 0, 0.0) is None
    assert recheck(runners, query.layout, query.spec, outside, 0, 1e-2) is not None


def test_exposed_model_runs_the_original_nodes():
    query = parse_query(DECL.format(t="float32") + "(assert (>= H[0,0] 0))", compose=True)
    runner = NetworkRunner.of(bind_network(query.info.networks[0], relu_net(W1, B1, W2, B2), 0))
    assert runner.probe() == [TensorProto.FLOAT, TensorProto.FLOAT]
    x = np.array([[0.5, -0.25]], np.float32)
    h, y = runner.run([x])
    np.testing.assert_array_equal(np.concatenate([h.reshape(-1), y.reshape(-1)]), _reference(x))
