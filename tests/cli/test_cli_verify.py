"""``nncert verify`` end to end on the bundled example (VNN-COMP and VNN-LIB 2.0 forms)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cli_util import EXAMPLES, needs_pipeline, run_nncert

MODEL = EXAMPLES / "tiny.onnx"
PAIR = re.compile(r"\(([XY])_(\d+) ([^\s)]+)\)")


@needs_pipeline
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


@needs_pipeline
def test_unsat(tmp_path):
    results = tmp_path / "out.txt"
    proc = run_nncert("verify", MODEL, EXAMPLES / "tiny_unsat.vnnlib", "--timeout", "60",
                      "--results-file", results)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout == "unknown\n":
        pytest.skip("the pipeline cannot prove this property yet")
    assert proc.stdout == "unsat\n" == results.read_text()


@needs_pipeline
def test_vnnlib2_interface():
    proc = run_nncert("verify", EXAMPLES / "tiny_sat_v2.vnnlib", "--network",
                      f"tiny={MODEL}", "--timeout", "60.5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sat"
    assert lines[1] == "X float32 [1,2]" and lines[4] == "Y float32 [1,2]"
    assert len(lines) == 7
    float(lines[2]), float(lines[6])


@needs_pipeline
def test_timeout_words(tmp_path):
    results = tmp_path / "out.txt"
    v1 = run_nncert("verify", MODEL, EXAMPLES / "tiny_sat.vnnlib", "--timeout", "0.001",
                    "--results-file", results)
    assert (v1.returncode, v1.stdout, results.read_text()) == (0, "timeout\n", "timeout\n")
    v2 = run_nncert("verify", EXAMPLES / "tiny_sat_v2.vnnlib", "--network", f"tiny={MODEL}",
                    "--timeout", "0.001")
    assert (v2.returncode, v2.stdout) == (0, "timed-out\n")


@needs_pipeline
def test_profile_startup_line():
    proc = run_nncert("verify", MODEL, EXAMPLES / "tiny_unsat.vnnlib", "--profile-startup")
    assert proc.returncode == 0, proc.stderr
    profile = [line for line in proc.stderr.splitlines() if line.startswith("profile:")]
    assert len(profile) == 1
    for stage in ("startup", "import_torch", "load_model", "parse_spec", "ready"):
        assert f" {stage}=" in profile[0]
