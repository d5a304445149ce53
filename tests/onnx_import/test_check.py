"""The differential check accepts float32 rounding, refuses a wrong import naming where it
differs, and stays within its share of the time."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from bounds.graph import Graph, Node
from tests.onnx_import.onnx_util import make_model, one_node, rand
from tests.onnx_import.test_benchmarks import unit_box_spec
from verifier.errors import ModelMismatchError
from verifier.onnx_import import check
from verifier.onnx_import.check import differential_check, run_check, sample_points
from verifier.onnx_import.check_eval import OutOfTime, enclose, excess
from verifier.onnx_import.loader import import_proto
from verifier.onnx_import.ort import batch_axis, ort_session, run_ort, session_exposing
from verifier.spec.types import InputRegion, Spec


def _import(proto: onnx.ModelProto):
    data = proto.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def _gemm_model():
    return _import(one_node("Gemm", {"x": (1, 4)}, {"w": rand(3, 4), "b": rand(3)}, transB=1))


def _graph(nodes: list[onnx.NodeProto], inits: dict, n_in: int, out_dim: int):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_dim])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def residual_model(seed: int = 0, n_in: int = 16, hidden: int = 512):
    """A physics-residual-like net: hidden terms of size ~1e4, two heads that nearly cancel
    (head 1 = -head 0 + 1e-4 noise), summed. The output is a small difference of large terms,
    so float32 evaluation order moves it by far more than 1e-4 of its size."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(hidden, 2))
    v[:, 1] = -v[:, 0] + rng.normal(size=hidden) * 1e-4
    inits = {"w1": rng.normal(size=(n_in, hidden)) * 1e3, "b1": rng.normal(size=hidden) * 1e3,
             "v": v, "v2": np.ones((2, 1))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Add", ["a", "b1"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("MatMul", ["h", "v"], ["t"]),
             helper.make_node("MatMul", ["t", "v2"], ["y"])]
    return _import(_graph(nodes, inits, n_in, 1))


def _with_node(model, name: str, change) -> object:
    """``model`` with the IR node ``name`` replaced by ``change(node)``."""
    g = model.graph
    nodes = tuple(change(n) if n.name == name else n for n in g.nodes)
    return dataclasses.replace(model, graph=Graph(g.inputs, g.outputs, nodes, g.opset))


def _nudge_weight(node: Node, rel: float) -> Node:
    consts = dict(node.consts)
    w = consts[1].copy()
    w.flat[0] *= 1 + rel
    consts[1] = w
    return Node(node.name, node.op, node.inputs, node.shape, node.attrs, consts)


def test_faithful_import_passes():
    model = _gemm_model()
    assert differential_check(model, unit_box_spec(model)) <= 1e-6


def test_cancellation_heavy_model_is_accepted():
    # The former check (|ours - ort| / max(1, |ort|) <= 1e-4, ours in float32) refused this
    # model: "relative error 0.0625 > 0.0001 at a corner point of the input box".
    model = residual_model()
    report = run_check(model, unit_box_spec(model))
    assert report.points == report.planned
    assert report.worst_ratio <= check.SLACK


def test_onnxruntime_sigmoid_error_is_accepted():
    # onnxruntime's Sigmoid is off by up to 1.16x the rounding model's generic allowance
    # around sigmoid(-12); the slack must absorb it.
    model = _import(one_node("Sigmoid", {"x": (1, 64)}))
    spec = Spec((InputRegion(np.full(64, -14.0), np.full(64, -10.0), None),), 64, 64)
    assert run_check(model, spec, n_random=64).worst_ratio <= check.SLACK


def _batchnorm_model(c: int, mean, var, scale, bias, shape):
    inits = {"s": scale, "b": bias, "m": mean, "v": var}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    graph = helper.make_graph(
        [node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return _import(proto)


def test_folded_batchnorm_constants_are_allowed_for():
    # The importer folds BatchNormalization into Mul + Add with constants computed in float64
    # and rounded once; onnxruntime computes its own. Near the mean (outputs that cancel) the
    # difference of the constants was 1.47x the rounding allowance before the allowance
    # counted one rounding of each constant; the allowance alone must now cover it.
    rng = np.random.default_rng(0)
    c = 64
    mean = rng.uniform(0.5, 2, c)
    model = _batchnorm_model(c, mean, rng.uniform(0.01, 0.1, c), rng.uniform(1, 50, c),
                             rng.normal(size=c), [1, c, 2, 2])
    centre = np.repeat(mean, 4)
    spec = Spec((InputRegion(centre - 0.3, centre + 0.3, None),), 4 * c, 4 * c)
    assert run_check(model, spec, n_random=200).worst_ratio <= 1.0


def test_batchnorm_whose_bias_cancels_its_mean_is_accepted(caplog):
    # bias = mean * scale / sqrt(var + eps) + small: our folded constant is small, while
    # onnxruntime's float32 kernel rounds terms of size ~100, far beyond the allowance of our
    # structure. The float64 ONNX semantics (second opinion) agree with our import.
    c = 8
    mean = np.linspace(50, 120, c)
    a = np.float32(1.0) / np.sqrt(np.float32(1.0) + np.float32(1e-5))
    model = _batchnorm_model(c, mean, np.ones(c), np.ones(c), mean * a + 0.01, [1, c])
    spec = Spec((InputRegion(np.full(c, -0.01), np.full(c, 0.01), None),), c, c)
    with caplog.at_level(logging.INFO, logger="verifier.onnx_import.check"):
        report = run_check(model, spec, n_random=32)
    assert report.worst_ratio <= check.SLACK
    assert "the float64 ONNX semantics" in caplog.text  # onnxruntime alone was beyond slack


def test_tampered_graph_is_refused():
    model = _gemm_model()
    tampered = _with_node(model, model.graph.nodes[0].name, lambda n: _nudge_weight(n, 0.01))
    with pytest.raises(ModelMismatchError, match=r"output 'y0' .*allowance .* point"):
        differential_check(tampered, unit_box_spec(tampered))


def test_wrong_weight_is_refused_naming_the_first_differing_value():
    model = residual_model()
    names = {n.name: n.op for n in model.graph.nodes}
    middle = next(ir for onnx_name, ir in model.value_names.items() if onnx_name == "t")
    assert names[middle] == "Linear"
    # One of 1024 weights doubled: the layer's value moves by ~1e-3 of its size, ~15x its
    # float32 worst-case allowance (a 1% change stays inside it: the allowance is the worst
    # case over summation orders, here 400x the rounding onnxruntime actually shows).
    tampered = _with_node(model, middle, lambda n: _nudge_weight(n, 1.0))
    with pytest.raises(ModelMismatchError, match=rf"ONNX value 't' \(IR node '{middle}'"):
        run_check(tampered, unit_box_spec(tampered))


def test_fused_values_are_not_compared_under_their_old_names():
    model = residual_model()
    # MatMul + Add fuse into one Linear that keeps the MatMul's node name: neither ONNX value
    # may map to it; the Relu after it still maps.
    ops = {n.name: n.op for n in model.graph.nodes}
    assert "a" not in model.value_names and "h0" not in model.value_names
    assert ops[model.value_names["h"]] == "Relu"


def test_two_input_model_is_checked_on_both_inputs():
    nodes = [helper.make_node("Mul", ["a", "b"], ["p"]),
             helper.make_node("MatMul", ["p", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3])
                       for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(rand(3, 2), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    model = _import(proto)
    spec = Spec((InputRegion(np.full(6, -1.0), np.arange(6.0), None),), 6, 2)
    assert run_check(model, spec).worst_ratio <= check.SLACK
    swapped = _with_node(model, model.value_names["p"], lambda n: Node(
        n.name, n.op, (n.inputs[0], n.inputs[0]), n.shape, n.attrs, n.consts))
    with pytest.raises(ModelMismatchError, match=r"ONNX value 'p'"):
        run_check(swapped, spec)


def test_deadline_already_passed_checks_nothing(caplog):
    model = _gemm_model()
    with caplog.at_level(logging.WARNING, logger="verifier.onnx_import.check"):
        report = run_check(model, unit_box_spec(model), deadline=time.monotonic() - 1)
    assert report.points == 0 and report.planned > 0
    assert "skipped" in caplog.text


class _FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_points_fit_the_time_share(monkeypatch):
    """With each point costing one (fake) second and 100 s left, the check takes the first
    point, then as many as fit its 5% share, and ends within it."""
    clock = _FakeClock()
    monkeypatch.setattr(check, "_now", clock.monotonic)
    calls = []

    def fake_batch(model, points, kinds, stop):
        calls.append(len(points))
        clock.now += len(points)
        return 0.0, 0.0

    monkeypatch.setattr(check, "_check_batch", fake_batch)
    model = _gemm_model()
    report = run_check(model, unit_box_spec(model), deadline=clock.now + 100)
    assert calls[0] == 1 and 2 <= report.points == sum(calls) <= 5 < report.planned
    assert clock.now <= 1000.0 + check.BUDGET_SHARE * 100
    calls.clear()
    assert run_check(model, unit_box_spec(model)).points == report.planned


def test_enclosure_stops_at_its_time_limit():
    model = residual_model()
    with pytest.raises(OutOfTime):
        enclose(model.graph, np.zeros((1, 16)), stop=time.monotonic() - 1)


def test_excess_handles_non_finite_values():
    ours = np.array([[np.nan, np.inf, 1e39, 1.0, 1.0]])
    allowance = np.array([[1.0, 1.0, 1.0, 1e-7, np.inf]])
    ref = np.array([[np.nan, np.inf, np.inf, np.nan, 5.0]])
    assert excess(ours, allowance, ref).tolist() == [[0.0, 0.0, 0.0, np.inf, 0.0]]


def test_sample_points_bounded_for_high_dimension():
    rng = np.random.default_rng(0)
    points, kinds = sample_points(np.zeros(100), np.ones(100), rng, 8)
    assert len(points) == len(kinds) <= 30
    assert kinds[0] == "centre" and {"corner", "centre", "random"} == set(kinds)
    points, kinds = sample_points(np.zeros(3), np.ones(3), rng, 2)
    assert kinds.count("corner") == 8


def test_ort_session_is_cached_and_runs():
    model = _gemm_model()
    assert ort_session(model) is ort_session(model)
    out = run_ort(model, np.zeros((2, 4)))
    assert out[0].shape == (2, 3)


def _batch_second_model(back: bool):
    """x[N, 2, 3] (N symbolic) -> Transpose to [2, N, 3] -> MatMul -> u[2, N, 4] (the batch
    on axis 1, as a seq-first LSTM's values hold it) -> Relu; transposed back when ``back``."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
             helper.make_node("MatMul", ["t", "w"], ["u"]),
             helper.make_node("Relu", ["u"], ["r" if back else "y"])]
    if back:
        nodes.append(helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0, 2]))
    return _import(make_model(nodes, {"x": (1, 2, 3)}, ["y"], {"w": rand(3, 4)},
                              batch_symbolic=True))


@pytest.mark.parametrize("back", [True, False])
def test_values_holding_the_batch_off_axis_0_are_compared_point_by_point(back):
    # run_ort stacks the points on the symbolic batch axis: a value whose batch sits on
    # axis 1 was read as if on axis 0, its points mixed, and a faithful import refused
    model = _batch_second_model(back)
    points = np.random.default_rng(0).uniform(-1, 1, (5, 6))
    batched = run_ort(model, points, session=session_exposing(model, ["u"]))
    one_by_one = [run_ort(model, p[None], session=session_exposing(model, ["u"])) for p in points]
    for k, value in enumerate(batched):
        np.testing.assert_array_equal(value, np.concatenate([o[k] for o in one_by_one]))
    assert differential_check(model, unit_box_spec(model)) <= 1e-5


@pytest.mark.parametrize("shape,one,n,axis", [
    ((4, 3), (1, 3), 4, 0), ((5, 1, 4, 8), (5, 1, 1, 8), 4, 2),
    ((5, 3), (5, 3), 5, None),     # does not depend on the batch
    ((8, 3), (2, 3), 4, None),     # the batch merged into a larger axis: order unknown
    ((4, 4), (1, 1), 4, None),     # two axes grew
    ((4, 3), (1, 3, 1), 4, None), ((2, 3), (2, 3), 1, 0),
])
def test_batch_axis(shape, one, n, axis):
    assert batch_axis(shape, one, n) == axis


def test_an_output_merging_the_batch_runs_point_by_point_every_time():
    # Reshape to [-1] merges the batch into one axis (its order unknown): no batched reading,
    # on the first call and (remembered) on later ones
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    model = _import(make_model(nodes, {"x": (1, 2, 3)}, ["y"], {"flat": np.array([-1])},
                               batch_symbolic=True))
    points = np.random.default_rng(1).uniform(-1, 1, (4, 6))
    expected = np.concatenate([run_ort(model, p[None])[0] for p in points])
    for _ in range(2):
        np.testing.assert_array_equal(run_ort(model, points)[0], expected)


def _standardised_conv_model(seed: int = 0, c_in: int = 16, c_out: int = 8):
    """A 1x1 Conv whose weights the graph standardises (BiT, as transformers exports it: a
    training-mode BatchNormalization over each output channel's weights, then a Reshape).
    Weights far from zero and close together make the centring cancel."""
    rng = np.random.default_rng(seed)
    w = (3.0 + rng.normal(size=(1, c_out, c_in)) * 1e-2).astype(np.float32)
    inits = {"w": w, "one": np.ones(c_out), "zero": np.zeros(c_out),
             "shape": np.array([c_out, c_in, 1, 1])}
    nodes = [
        helper.make_node("BatchNormalization", ["w", "one", "zero", "zero", "one"],
                         ["ws", "running_mean", "running_var"],
                         epsilon=1e-8, training_mode=1),
        helper.make_node("Reshape", ["ws", "shape"], ["k"]),
        helper.make_node("Conv", ["x", "k"], ["y"])]
    graph = helper.make_graph(
        nodes, "ws", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, 4, 4])],
        [numpy_helper.from_array(np.asarray(v, np.int64 if k == "shape" else np.float32), k)
         for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    proto.ir_version = 8
    return proto


def test_weights_computed_in_the_graph_are_onnxruntimes():
    # The folded weights are the ones onnxruntime computes: the reference evaluator's differed
    # by a rounding of the mean, which the centring made large next to small weights (the
    # check refused the Conv reading them at 28x its allowance on BiT).
    proto = _standardised_conv_model()
    model = _import(proto)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(exposed.SerializeToString())
    ort_weights = session.run(["k"], {"x": np.zeros((1, 16, 4, 4), np.float32)})[0]
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    np.testing.assert_array_equal(conv.consts[1], ort_weights)
    spec = Spec((InputRegion(np.full(256, -1.0), np.full(256, 1.0), None),), 256, 256)
    assert run_check(model, spec, n_random=64).worst_ratio <= check.SLACK
