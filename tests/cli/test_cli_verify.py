"""``nncert verify`` end to end on the bundled example (VNN-COMP and VNN-LIB 2.0 forms)."""

from __future__ import annotations

import re

import numpy as np
from cli_util import EXAMPLES, assert_one_line_error, run_nncert

MODEL = EXAMPLES / "tiny.onnx"
PAIR = re.compile(r"\(([XY])_(\d+) ([^\s)]+)\)")


def test_sat_prints_counterexample_and_results_file(tmp_path):
    results = tmp_path / "out.txt"
    proc = run_nncert("verify", MODEL, EXAMPLES / "tiny_sat.vnnlib", "--timeout", "60",
                      "--results-file", results)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "sat"
    text = results.read_text()
    assert text.splitlines()[0] == "sat"
    assert text.splitlines()[1].startswith("((X_0 ") and text.rstrip().endswith("))")
    values = {(k, int(i)): float(v) for k, i, v in PAIR.findall(text)}
    assert sorted(values) == [("X", 0), ("X", 1), ("Y", 0), ("Y", 1)]
    x = np.array([values["X", 0], values["X", 1]])
    assert np.all((0 <= x) & (x <= 1))
    assert abs(values["Y", 1] - abs(x[0] - x[1])) < 1e-5 and values["Y", 1] >= 0.9
    assert proc.stdout == text  # stdout carries the same answer, and nothing else


def test_unsat(tmp_path):
    results = tmp_path / "out.txt"
    proc = run_nncert("verify", MODEL, EXAMPLES / "tiny_unsat.vnnlib", "--timeout", "60",
                      "--results-file", results)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "unsat\n" == results.read_text()  # proved in well under a second


def test_vnnlib2_interface():
    proc = run_nncert("verify", EXAMPLES / "tiny_sat_v2.vnnlib", "--network",
                      f"tiny={MODEL}", "--timeout", "60.5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sat"
    assert lines[1] == "X float32 [1,2]" and lines[4] == "Y float32 [1,2]"
    assert len(lines) == 7
    float(lines[2]), float(lines[6])


def test_timeout_words(tmp_path):
    results = tmp_path / "out.txt"
    v1 = run_nncert("verify", MODEL, EXAMPLES / "tiny_sat.vnnlib", "--timeout", "0.001",
                    "--results-file", results)
    assert (v1.returncode, v1.stdout, results.read_text()) == (0, "timeout\n", "timeout\n")
    v2 = run_nncert("verify", EXAMPLES / "tiny_sat_v2.vnnlib", "--network", f"tiny={MODEL}",
                    "--timeout", "0.001")
    assert (v2.returncode, v2.stdout) == (0, "timed-out\n")


def test_profile_startup_line():
    proc = run_nncert("verify", MODEL, EXAMPLES / "tiny_unsat.vnnlib", "--profile-startup")
    assert proc.returncode == 0, proc.stderr
    profile = [line for line in proc.stderr.splitlines() if line.startswith("profile:")]
    assert len(profile) == 1
    for stage in ("startup", "import_torch", "load_model", "parse_spec", "ready"):
        assert f" {stage}=" in profile[0]


def test_profiled_model_check_runs_within_the_timeout(monkeypatch):
    """--profile-startup runs the model check as its own lap (``_timed_check``) with the
    run's deadline (it had none: 64 s of a 60 s run on VGG16). (In process, the check alone:
    a whole in-process verify caps the test worker's memory.)"""
    import time
    from pathlib import Path

    import verifier.onnx_import.check as check
    from verifier.cli.common import Stopwatch
    from verifier.cli.verify_cmd import _timed_check
    from verifier.onnx_import.loader import load_model
    from verifier.spec import load_spec

    deadlines, real = [], check.differential_check

    def recorded(model, spec, seed=0, n_random=8, deadline=None):
        deadlines.append(deadline)
        return real(model, spec, seed, n_random, deadline)

    monkeypatch.setattr(check, "differential_check", recorded)
    clock = Stopwatch()  # (it counts from the process start: this worker's is long past)
    clock.origin = time.monotonic()
    model, spec = load_model(Path(MODEL)), load_spec(EXAMPLES / "tiny_unsat.vnnlib")
    assert _timed_check(model, spec, 0, clock, 30.0)
    assert deadlines and deadlines[0] is not None
    assert abs(deadlines[0] - (clock.origin + 30)) < 1.0


def _sinh_model(path) -> None:
    """y = sinh(x0 + x1): ``Sinh`` has no converter, onnxruntime runs it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["s"], transB=1),
             helper.make_node("Sinh", ["s"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((1, 2), np.float32), "w"),
             numpy_helper.from_array(np.zeros(1, np.float32), "b")]
    graph = helper.make_graph(
        nodes, "sinh", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.save(proto, path)


_SINH_SPEC = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 0.5))
(assert (>= X_1 -0.4298715077881821))
(assert (<= X_1 -0.4298715077881821))
(assert (>= Y_0 {threshold}))
"""


def test_model_the_importer_refuses_is_attacked(tmp_path):
    # X_1 is pinned to a value no float32 equals; sinh(x0 + x1) >= 0.05 needs x0 >= 0.48.
    model, spec = tmp_path / "sinh.onnx", tmp_path / "sat.vnnlib"
    _sinh_model(model)
    spec.write_text(_SINH_SPEC.format(threshold=0.05))
    proc = run_nncert("verify", model, spec, "--timeout", "30", "--no-check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "sat"
    assert "import check against onnxruntime was skipped" in proc.stderr
    values = {(k, int(i)): float(v) for k, i, v in PAIR.findall(proc.stdout)}
    assert sorted(values) == [("X", 0), ("X", 1), ("Y", 0)]
    assert 0 < abs(values["X", 1] + 0.4298715077881821) <= 1e-4 and values["Y", 0] >= 0.05
    strict = run_nncert("verify", model, spec, "--timeout", "30", "--strict-box")
    assert strict.returncode == 0, strict.stderr
    assert strict.stdout == "unknown\n"  # the only points it could answer lie off the box


def test_model_the_importer_refuses_unknown_names_the_op(tmp_path):
    model, spec = tmp_path / "sinh.onnx", tmp_path / "unsat.vnnlib"
    _sinh_model(model)
    spec.write_text(_SINH_SPEC.format(threshold=0.75))  # sinh(x0 + x1) <= sinh(0.08): never
    proc = run_nncert("-v", "verify", model, spec, "--timeout", "12")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "unknown\n"
    assert "'Sinh'" in proc.stderr


def test_model_neither_importer_nor_onnxruntime_runs_is_bad_input(tmp_path):
    import onnx

    model, spec = tmp_path / "bad.onnx", tmp_path / "sat.vnnlib"
    _sinh_model(model)
    proto = onnx.load(model)
    proto.graph.node[1].op_type = "NoSuchOp"
    proto.graph.node[1].name = "the_node"
    onnx.save(proto, model)
    spec.write_text(_SINH_SPEC.format(threshold=0.05))
    proc = run_nncert("verify", model, spec, "--timeout", "30")
    line = assert_one_line_error(proc)
    assert "NoSuchOp" in line and "the_node" in line
