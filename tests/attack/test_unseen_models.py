"""Issue 16: pinned inputs that no float32 equals, models only onnxruntime runs, strict boxes.

Small models built with onnx.helper; verdicts through ``verifier.pipeline.verify``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from conftest import make_spec
from onnx import TensorProto, helper, numpy_helper

from bounds.graph import Graph, Node
from tests.onnx_builders import gemm_relu_mlp
from verifier.attack import falsify, falsify_blackbox
from verifier.config import AttackConfig, VerifyConfig
from verifier.onnx_import.loader import ImportedModel, import_proto
from verifier.pipeline import OrtModel, load_runnable_model, verify
from verifier.validate import VNNCOMP_BOX_TOL, box_tolerance

PINNED = -0.4298715077881821  # no float32 equals it


def _imported(proto: onnx.ModelProto) -> ImportedModel:
    return import_proto(proto, proto.SerializeToString(), "test")


def sum_net(n: int) -> ImportedModel:
    """y = relu(sum x) - relu(-sum x) = sum x, through a hidden ReLU layer."""
    w1 = np.stack([np.ones(n), -np.ones(n)])
    w2 = np.array([[1.0, -1.0]])
    return _imported(gemm_relu_mlp([(w1, np.zeros(2)), (w2, np.zeros(1))]))


def pinned_spec(n: int, width: float, threshold: float):
    """X_0 pinned to PINNED, the others in [0, width]; unsafe when y >= threshold."""
    lower = np.r_[PINNED, np.zeros(n - 1)]
    upper = np.r_[PINNED, np.full(n - 1, width)]
    return make_spec(lower, upper, [[[-1.0]]], [[-threshold]])


def test_pinned_coordinate_really_has_no_float32():
    assert float(np.float32(PINNED)) != PINNED


@pytest.mark.parametrize("n, width", [(2, 1.0), (20, 0.05)])  # input split / neuron split
def test_pinned_unsat_is_proved(n, width):
    # max y = PINNED + (n - 1) * width = 0.570 (n=2) or 0.520 (n=20): y >= 0.6 is impossible.
    result = verify(sum_net(n), pinned_spec(n, width, 0.6), VerifyConfig(timeout=60))
    assert result.verdict == "unsat", result


def test_pinned_unsat_by_input_split():
    result = verify(sum_net(2), pinned_spec(2, 1.0, 0.6), VerifyConfig(timeout=60, method="bab"))
    assert result.verdict == "unsat", result


def test_pinned_unsat_by_neuron_split():
    # A random 20-16-16-1 ReLU net whose property CROWN alone leaves open (seeded; y <= 3 on
    # the box, the largest y attacks found is about 2.2): beta-CROWN splits with X_0 pinned.
    rng = np.random.default_rng(3)
    layers = [(rng.normal(size=(16, 20)), 0.1 * rng.normal(size=16)),
              (0.3 * rng.normal(size=(16, 16)), 0.1 * rng.normal(size=16)),
              (rng.normal(size=(1, 16)), np.zeros(1))]
    model = _imported(gemm_relu_mlp(layers))
    lower, upper = np.r_[PINNED, np.full(19, -0.1)], np.r_[PINNED, np.full(19, 0.1)]
    spec = make_spec(lower, upper, [[[-1.0]]], [[-3.0]])
    result = verify(model, spec, VerifyConfig(timeout=60, method="bab"))
    assert result.verdict == "unsat", result


@pytest.mark.parametrize("n, width", [(2, 1.0), (20, 0.05)])
def test_pinned_sat_is_found_with_its_tolerance(n, width):
    # y >= 0.5 needs the free inputs near their upper bounds and X_0 at its pinned value.
    spec = pinned_spec(n, width, 0.5)
    result = verify(sum_net(n), spec, VerifyConfig(timeout=60))
    assert result.verdict == "sat", result
    cex = result.counterexample
    assert cex.x[0] in (float(np.nextafter(np.float32(PINNED), np.float32(-1))),
                        float(np.float32(PINNED)),
                        float(np.nextafter(np.float32(PINNED), np.float32(1))))
    assert cex.box_distance == abs(cex.x[0] - PINNED)
    assert 0 < cex.box_distance <= VNNCOMP_BOX_TOL
    assert result.stats["cex_box_distance"] == cex.box_distance
    assert spec.regions[0].condition.holds(cex.y)


def test_strict_box_refuses_a_point_outside_the_real_box():
    spec = pinned_spec(2, 1.0, 0.5)
    result = verify(sum_net(2), spec, VerifyConfig(timeout=3, strict_box=True))
    assert result.verdict in ("unknown", "timeout"), result


def _result_if_it_returns(run, limit_s: float = 120.0) -> list:
    """[run()] when it returns within limit_s, else [] (liveness only: a search that spins
    without looking at the clock never returns; the limit is far above its normal time)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(run()), daemon=True)
    worker.start()
    worker.join(limit_s)
    return out


def test_falsify_returns_when_every_region_has_no_float32_point():
    # Strict mode drops the float32-empty regions; the search once spun on an empty list.
    def run():
        with box_tolerance(0.0):
            return falsify(sum_net(2), pinned_spec(2, 1.0, 0.5), time.monotonic() + 3600,
                           AttackConfig(time_share=1.0))

    assert _result_if_it_returns(run) == [None]


def test_falsify_attacks_the_nearest_float32_points_by_default():
    spec = pinned_spec(2, 1.0, 0.5)
    cex = falsify(sum_net(2), spec, time.monotonic() + 60, AttackConfig(time_share=1.0),
                  budget_s=10)
    assert cex is not None and 0 < cex.box_distance <= VNNCOMP_BOX_TOL


def mod_model(modulus: float = 0.7) -> onnx.ModelProto:
    """y = fmod(x0 + x1, 0 x + modulus): the importer refuses ``Mod`` of an input-dependent
    divisor (here one in form only); onnxruntime runs it."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["s"], transB=1),
             helper.make_node("Gemm", ["x", "z", "m"], ["d"], transB=1),
             helper.make_node("Mod", ["s", "d"], ["y"], fmod=1)]
    inits = [numpy_helper.from_array(np.ones((1, 2), np.float32), "w"),
             numpy_helper.from_array(np.zeros(1, np.float32), "b"),
             numpy_helper.from_array(np.zeros((1, 2), np.float32), "z"),
             numpy_helper.from_array(np.full(1, modulus, np.float32), "m")]
    graph = helper.make_graph(
        nodes, "mod", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


@pytest.fixture
def mod_path(tmp_path):
    path = tmp_path / "mod.onnx"
    onnx.save(mod_model(), path)
    return path


def test_refused_model_loads_for_onnxruntime(mod_path):
    model = load_runnable_model(mod_path)
    assert isinstance(model, OrtModel)
    assert "Mod" in model.reason
    assert (model.n_inputs, model.n_outputs) == (2, 1)


def test_op_without_converter_is_attacked_sat(mod_path):
    # fmod(x0 + x1, 0.7) >= 0.65 at x0 + x1 in [0.65, 0.7): narrow, but a search finds it.
    spec = make_spec([0.0, 0.0], [0.5, 0.5], [[[-1.0]]], [[-0.65]])
    result = verify(mod_path, spec, VerifyConfig(timeout=30))
    assert result.verdict == "sat", result
    assert spec.violated_by(result.counterexample.x, result.counterexample.y)
    assert result.counterexample.box_distance == 0.0


def test_op_without_converter_is_unknown_naming_the_op(mod_path):
    spec = make_spec([0.0, 0.0], [0.5, 0.5], [[[-1.0]]], [[-0.75]])  # fmod < 0.7 always
    result = verify(mod_path, spec, VerifyConfig(timeout=2))
    assert result.verdict == "unknown", result
    assert "'Mod'" in result.message


def test_model_onnxruntime_cannot_run_stays_an_error(tmp_path):
    proto = mod_model()
    proto.graph.node[-1].op_type = "NoSuchOp"
    path = tmp_path / "bad.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(Exception, match="NoSuchOp"):
        load_runnable_model(path)


def test_graph_op_without_bound_rule_is_attacked_only():
    # The IR names an op no rule knows; onnxruntime still runs the original model.
    model = sum_net(2)
    node = Node("odd", "NoRuleOp", (model.graph.outputs[0].name,), (1, 1))
    graph = Graph(model.graph.inputs, model.graph.outputs, (*model.graph.nodes, node))
    odd = ImportedModel(graph, model.onnx_bytes, model.input_names, model.output_names,
                        model.onnx_input_shapes, "odd")
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-1.5]])  # y = x0 + x1 >= 1.5
    result = verify(odd, spec, VerifyConfig(timeout=20, check_model=False))
    assert result.verdict == "sat", result
    unsat_spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-2.5]])
    result = verify(odd, unsat_spec, VerifyConfig(timeout=2, check_model=False))
    assert result.verdict == "unknown" and "NoRuleOp" in result.message, result


def test_ir_that_disagrees_with_onnxruntime_is_attacked_with_onnxruntime():
    # The IR doubles the sum; onnxruntime (the truth) computes x0 + x1.
    truth = sum_net(2)
    doubled = gemm_relu_mlp([(2 * np.stack([np.ones(2), -np.ones(2)]), np.zeros(2)),
                             (np.array([[1.0, -1.0]]), np.zeros(1))])
    ir = _imported(doubled).graph
    wrong = ImportedModel(ir, truth.onnx_bytes, truth.input_names, truth.output_names,
                          truth.onnx_input_shapes, "wrong")
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-1.9]])  # y >= 1.9: near (1, 1)
    result = verify(wrong, spec, VerifyConfig(timeout=20))
    assert result.verdict == "sat", result
    assert "disagrees" in result.message
    assert result.counterexample.y[0] >= 1.9


def test_blackbox_finds_a_corner_violation():
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-1.99]])
    cex = falsify_blackbox(sum_net(2), spec, time.monotonic() + 20)
    assert cex is not None and spec.violated_by(cex.x, cex.y)


def test_bug_in_a_bound_stage_still_ends_in_an_attack(monkeypatch):
    def broken(*args, **kwargs):
        raise IndexError("planted bug")

    monkeypatch.setattr("verifier.strategy.run_methods", broken)
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-1.99]])
    result = verify(sum_net(2), spec, VerifyConfig(timeout=20))
    assert result.verdict == "sat", result
    unsat_spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-2.5]])
    result = verify(sum_net(2), unsat_spec, VerifyConfig(timeout=2))
    assert result.verdict == "unknown", result
    assert "internal error" in result.message and "planted bug" in result.message
    assert result.stats["internal_error"] == "IndexError"


def sign_model() -> ImportedModel:
    """y = Sign(x0 - 0.6) + Sign(0.8 - x0): piecewise constant, zero gradient everywhere;
    y = 2 only on 0.6 < x0 < 0.8, away from the centre and the corners of [0, 1]^2."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["d"], transB=1),
             helper.make_node("Sign", ["d"], ["s"]),
             helper.make_node("ReduceSum", ["s", "axes"], ["y"], keepdims=1)]
    inits = [numpy_helper.from_array(np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32), "w"),
             numpy_helper.from_array(np.array([-0.6, 0.8], np.float32), "b"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(
        nodes, "sign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return _imported(proto)


def test_falsify_hands_a_flat_loss_to_the_gradient_free_search(caplog):
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-2.0]])  # y >= 2
    config = AttackConfig(restarts=4, steps=20, random_samples=0, time_share=1.0)
    with caplog.at_level("INFO", logger="verifier.attack.falsify"):
        cex = falsify(sign_model(), spec, time.monotonic() + 60, config, budget_s=20)
    assert cex is not None and spec.violated_by(cex.x, cex.y)
    assert "no gradient" in caplog.text


def test_blackbox_returns_after_one_round_when_every_coordinate_is_pinned():
    spec = make_spec([PINNED, 0.25], [PINNED, 0.25], [[[-1.0]]], [[-5.0]])  # y >= 5: never
    run = lambda: falsify_blackbox(sum_net(2), spec, time.monotonic() + 3600)  # noqa: E731
    assert _result_if_it_returns(run) == [None]


# ---- models whose every output is a constant: one evaluation decides ----------------------
def constant_model() -> onnx.ModelProto:
    """y = float(shape(x)) + [0.5, -1]: no output value depends on x's values."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "c"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0.5, -1.0], np.float32), "c")]
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto  # y = [1.5, 1.0]


@pytest.fixture
def constant_path(tmp_path):
    path = tmp_path / "constant.onnx"
    onnx.save(constant_model(), path)
    return path


def test_constant_output_model_is_proved_by_one_evaluation(constant_path):
    assert load_runnable_model(constant_path).constant_output
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0, 1.0]]], [[-0.75]])  # y1 - y0 <= -0.75?
    result = verify(constant_path, spec, VerifyConfig(timeout=10))
    assert (result.verdict, result.method) == ("unsat", "constant-output"), result


def test_constant_output_model_violation_is_a_validated_sat(constant_path):
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0, 1.0]]], [[-0.5]])  # y1 - y0 = -0.5
    result = verify(constant_path, spec, VerifyConfig(timeout=10))
    assert (result.verdict, result.method) == ("sat", "constant-output"), result
    assert spec.violated_by(result.counterexample.x, result.counterexample.y)


def test_model_with_one_constant_output_among_others_is_only_attacked(tmp_path):
    proto = constant_model()
    proto.graph.node.append(helper.make_node("Relu", ["x"], ["r"]))
    proto.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 2]))
    path = tmp_path / "mixed.onnx"
    onnx.save(proto, path)
    model = load_runnable_model(path)
    assert isinstance(model, OrtModel) and not model.constant_output
