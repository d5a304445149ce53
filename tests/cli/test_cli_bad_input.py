"""Bad input: exit status 2, exactly one line on stderr naming the problem, no traceback."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from cli_util import EXAMPLES, assert_one_line_error, run_nncert
from onnx import TensorProto, helper, numpy_helper

MODEL = EXAMPLES / "tiny.onnx"
SAT = EXAMPLES / "tiny_sat.vnnlib"


def _write(path, text: str):
    path.write_text(text)
    return path


def _spec(tmp_path, n_in: int = 2, bounded: bool = True):
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    for i in range(n_in):
        lines.append(f"(assert (>= X_{i} 0.0))")
        if bounded or i == 0:
            lines.append(f"(assert (<= X_{i} 1.0))")
    lines.append("(assert (>= Y_1 0.9))")
    return _write(tmp_path / "spec.vnnlib", "\n".join(lines) + "\n")


def _model_with(tmp_path, op: str, external: bool = False):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])
    weight = numpy_helper.from_array(np.eye(2, dtype=np.float32), "W")
    if external:
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("raw_data")
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "weights.bin"
    nodes = [helper.make_node("MatMul", ["X", "W"], ["H"], name="mm"),
             helper.make_node(op, ["H"], ["Y"], name="the_node")]
    graph = helper.make_graph(nodes, "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_missing_model(tmp_path):
    line = assert_one_line_error(run_nncert("verify", tmp_path / "nope.onnx", SAT))
    assert "nope.onnx" in line


def test_missing_spec(tmp_path):
    line = assert_one_line_error(run_nncert("verify", MODEL, tmp_path / "nope.vnnlib"))
    assert "nope.vnnlib" in line


def test_directory_as_model(tmp_path):
    assert_one_line_error(run_nncert("verify", tmp_path, SAT))


def test_malformed_protobuf(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\xff\xff\xff this is not an onnx model \x00\x01")
    results = tmp_path / "results.txt"
    proc = run_nncert("verify", bad, SAT, "--results-file", results)
    line = assert_one_line_error(proc)
    assert "garbage.onnx" in line
    assert proc.stdout == ""  # bad input: no verdict on stdout ...
    assert results.read_text() == "error\n"  # ... but the harness's results file says error


def test_external_data(tmp_path):
    line = assert_one_line_error(run_nncert("verify", _model_with(tmp_path, "Relu", True), SAT))
    assert "external" in line


def test_external_data_beside_the_model_is_read(tmp_path):
    """torch's exporter writes weights beside the model by default: read from the model's
    folder, the run answers (Y = Relu(X W) with W = I: Y_1 >= 0.9 is reachable)."""
    path = _model_with(tmp_path, "Relu", True)
    (tmp_path / "weights.bin").write_bytes(np.eye(2, dtype=np.float32).tobytes())
    proc = run_nncert("verify", path, _spec(tmp_path), "--timeout", "20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "sat"


def test_op_nobody_runs(tmp_path):
    """An op neither the importer nor onnxruntime knows is bad input. (A model onnxruntime runs
    is attacked instead: tests/cli/test_cli_verify.py.)"""
    line = assert_one_line_error(run_nncert("verify", _model_with(tmp_path, "NoSuchOp"), SAT))
    assert "NoSuchOp" in line and "the_node" in line and "supported" in line


def test_broken_spec(tmp_path):
    spec = _write(tmp_path / "broken.vnnlib", "(declare-const X_0 Real)\n(assert (<= X_0 \n")
    assert_one_line_error(run_nncert("verify", MODEL, spec))


def test_unbounded_spec(tmp_path):
    line = assert_one_line_error(run_nncert("verify", MODEL, _spec(tmp_path, bounded=False)))
    assert "X_1" in line or "bound" in line


def test_spec_does_not_match_model(tmp_path):
    line = assert_one_line_error(run_nncert("verify", MODEL, _spec(tmp_path, n_in=3)))
    assert "3" in line


def test_network_option_syntax():
    assert_one_line_error(run_nncert("verify", SAT, "--network", "no-equals-sign"))


def test_wrong_argument_count():
    assert_one_line_error(run_nncert("verify", MODEL))


def test_undeclared_network_name():
    proc = run_nncert("verify", EXAMPLES / "tiny_sat_v2.vnnlib", "--network", f"other={MODEL}")
    assert "other" in assert_one_line_error(proc)


@pytest.mark.parametrize("value", ["-1", "0", "abc", "nan"])
def test_bad_timeout(value):
    assert_one_line_error(run_nncert("verify", MODEL, SAT, "--timeout", value))


def test_bench_missing_suite(tmp_path):
    assert_one_line_error(run_nncert("bench", tmp_path / "nothing"))


def test_bench_malformed_csv(tmp_path):
    _write(tmp_path / "instances.csv", "only-one-column\n")
    assert "instances.csv" in assert_one_line_error(run_nncert("bench", tmp_path))


def test_model_file_is_valid_onnx_fixture():
    onnx.checker.check_model(onnx.load(str(MODEL)))


def test_folding_bomb_exits_2(tmp_path):
    """A 184-byte model whose constant folding would build a 150M-element tensor is refused
    by the importer's fold budget, not handed to onnxruntime (which would build it)."""
    from tests.server.hostile_inputs import folding_bomb_model

    model = tmp_path / "bomb.onnx"
    model.write_bytes(folding_bomb_model())
    spec = _write(tmp_path / "bomb.vnnlib", "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                  "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= Y_0 1.0))\n")
    line = assert_one_line_error(run_nncert("verify", model, spec))
    assert "ConstantOfShape" in line and "elements" in line


def test_wide_disjunction_exits_2(tmp_path):
    """16 input 'or's over 1,500 inputs multiply out to 65,536 boxes: refused from the exact
    box count before any box is built."""
    from tests.server.hostile_inputs import sum_model, wide_disjunction_spec

    model = tmp_path / "sum.onnx"
    model.write_bytes(sum_model())
    spec = _write(tmp_path / "wide.vnnlib", wide_disjunction_spec())
    line = assert_one_line_error(run_nncert("verify", model, spec))
    assert "65536 input boxes of 1500 inputs" in line


@pytest.mark.parametrize("kind", ["short", "wrapping", "dtype", "ir99"])
def test_malformed_initializers_and_future_ir_exit_2(tmp_path, kind):
    """Issue 19 items 2 and 5 through the CLI: raw_data shorter than the dims, dims whose
    product wraps, an unknown data type, ir_version 99 (exit 3 or a job's 'internal error'
    before)."""
    from tests.onnx_builders import bad_initializer_model

    if kind == "ir99":
        proto = onnx.load(MODEL)
        proto.ir_version = 99
    else:
        proto = bad_initializer_model(kind)
    model = tmp_path / "bad.onnx"
    model.write_bytes(proto.SerializeToString())
    assert_one_line_error(run_nncert("verify", model, _spec(tmp_path)))  # both take X [1, 2]


def test_index_of_5000_digits_exits_2(tmp_path):
    spec = _write(tmp_path / "big.vnnlib", "(declare-const X_" + "9" * 5000 + " Real)\n")
    line = assert_one_line_error(run_nncert("verify", MODEL, spec))
    assert "digits" in line
