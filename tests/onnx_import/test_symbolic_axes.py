"""A symbolic sequence length fixed from the spec's input count (verifier.onnx_import.
symbolic_axes): the pinned model imports and agrees with onnxruntime, verify answers on it,
and the cases the count cannot settle are refused naming the dimensions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli.cli_util import run_nncert
from tests.onnx_import.onnx_util import compare, ort_outputs
from verifier.config import VerifyConfig
from verifier.errors import ModelError
from verifier.onnx_import.symbolic_axes import pin_symbolic_axes
from verifier.pipeline import verify

FEATURES = 3


def _model(dims=("N", "seq", FEATURES), extra: dict | None = None) -> onnx.ModelProto:
    """x[dims] -> mean over the sequence -> Gemm -> Relu -> Gemm -> y[1, 2] (plus ``extra``
    inputs {name: dims}, added to the mean's result through a Gemm of their own)."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(0, 1, (4, FEATURES)), "b1": rng.normal(0, 0.1, 4),
             "w2": rng.normal(0, 1, (2, 4)), "b2": np.zeros(2), "axes": np.array([1])}
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
             helper.make_node("Gemm", ["m", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], transB=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))]
    for name, shape in (extra or {}).items():
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        inits[f"{name}_w"] = rng.normal(0, 1, (FEATURES, shape[-1]))
        nodes[0:1] = [helper.make_node("ReduceMean", ["x", "axes"], ["m0"], keepdims=0),
                      helper.make_node("Gemm", [name, f"{name}_w"], [f"{name}_p"], transB=1),
                      helper.make_node("Add", ["m0", f"{name}_p"], ["m"])]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v.astype(np.int64 if k == "axes" else np.float32), k)
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _dims(model: onnx.ModelProto, i: int = 0) -> list:
    return [d.dim_value or d.dim_param for d in model.graph.input[i].type.tensor_type.shape.dim]


def test_the_spec_count_fixes_the_sequence_length_and_the_import_matches_onnxruntime():
    model = _model()
    assert pin_symbolic_axes(model, 5 * FEATURES)
    assert _dims(model) == ["N", 5, FEATURES]  # the batch axis stays symbolic (read as 1)
    compare(model)


def test_other_inputs_count_before_the_unknown():
    model = _model(extra={"z": (1, 2)})
    assert pin_symbolic_axes(model, 4 * FEATURES + 2)
    assert _dims(model) == ["N", 4, FEATURES] and _dims(model, 1) == [1, 2]
    compare(model)


def test_nothing_to_fix_leaves_the_model_alone():
    model = _model(dims=("N", 5, FEATURES))
    before = model.SerializeToString()
    assert not pin_symbolic_axes(model, 5 * FEATURES)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("dims,n,words", [
    (("N", "seq", "feat"), 12, ["'seq'", "'feat'", "fixes one only"]),
    (("N", "seq", FEATURES), 13, ["'seq'", "13 input values do not fill it"]),
    (("N", "seq", FEATURES), 0, ["'seq'", "0 input values"]),
])
def test_what_the_count_cannot_settle_is_refused_by_name(dims, n, words):
    with pytest.raises(ModelError) as err:
        pin_symbolic_axes(_model(dims=dims), n, "m.onnx")
    assert all(w in str(err.value) for w in words), str(err.value)


def _spec(center: np.ndarray, eps: float, y0_at_least: float) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(center.size)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    for i, v in enumerate(center.ravel().tolist()):
        lines += [f"(assert (>= X_{i} {v - eps!r}))", f"(assert (<= X_{i} {v + eps!r}))"]
    lines.append(f"(assert (>= Y_0 {y0_at_least!r}))")
    return "\n".join(lines) + "\n"


def test_verify_answers_on_a_model_with_a_dynamic_sequence_length(tmp_path):
    model = _model()
    path = tmp_path / "seq.onnx"
    onnx.save(model, path)
    center = np.linspace(-1, 1, 6 * FEATURES, dtype=np.float32).reshape(1, 6, FEATURES)
    y0 = float(ort_outputs(model, [{"x": center}])[0][0].ravel()[0])
    sat, unsat = tmp_path / "sat.vnnlib", tmp_path / "unsat.vnnlib"
    sat.write_text(_spec(center, 0.01, y0 - 0.5))  # the centre itself violates it
    unsat.write_text(_spec(center, 0.01, y0 + 100.0))
    found = verify(str(path), str(sat), VerifyConfig(timeout=30.0))
    assert found.verdict == "sat" and np.asarray(found.counterexample.x).size == 6 * FEATURES
    assert verify(str(path), str(unsat), VerifyConfig(timeout=30.0)).verdict == "unsat"
    proc = run_nncert("verify", path, unsat, "--timeout", "30")  # the CLI's own load path
    assert proc.returncode == 0 and proc.stdout == "unsat\n", proc.stderr
