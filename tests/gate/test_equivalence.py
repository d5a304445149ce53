"""The equivalence gate on hand-built models whose answer is known by construction.

* ``shift``: ``f(x) = W x`` and ``g(x) = W x + c`` with ``c = [0.3, -0.1]``: ``|g - f|_inf``
  is 0.3 everywhere, so ``--max-diff 0.31`` must be proved and ``0.29`` refuted on any ball.
* ``scaled relu``: ``f(x) = relu(x)``, ``g(x) = relu(1.1 x)`` (two inputs, identity weights):
  ``|g - f|_inf = 0.1 max_i relu(x_i)``; on the ball of radius 0.2 around ``[0.5, 0]`` (the
  second ReLU unstable) the largest difference is 0.1 * 0.7 = 0.07.
* ``label``: ``f(x) = [x, -x]`` (class 0 iff x > 0), ``g(x) = [x - 0.2, -x]`` (class 0 iff
  x > 0.1): they agree on balls that avoid [0, 0.1] and disagree on balls that meet (0, 0.1).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from equiv_models import affine_model, float16_affine_model

from verifier.gate.cli import main
from verifier.gate.equivalence import EquivalenceProperty, merged_model, violation


@pytest.fixture
def shift(tmp_path):
    w = np.array([[1.0, -2.0], [0.5, 1.5]])
    f = affine_model(tmp_path / "f.onnx", w, np.zeros(2))
    g = affine_model(tmp_path / "g.onnx", w, np.array([0.3, -0.1]))
    data = tmp_path / "points.npz"
    np.savez(data, x=np.array([[0.0, 0.0], [1.0, -1.0]]))
    return f, g, str(data)


@pytest.fixture
def scaled_relu(tmp_path):
    f = affine_model(tmp_path / "f.onnx", np.eye(2), np.zeros(2), relu_scale=1.0)
    g = affine_model(tmp_path / "g.onnx", np.eye(2), np.zeros(2), relu_scale=1.1)
    data = tmp_path / "points.npz"
    np.savez(data, x=np.array([[0.5, 0.0]]))
    return f, g, str(data)


@pytest.fixture
def label(tmp_path):
    f = affine_model(tmp_path / "f.onnx", np.array([[1.0], [-1.0]]), np.zeros(2))
    g = affine_model(tmp_path / "g.onnx", np.array([[1.0], [-1.0]]), np.array([-0.2, 0.0]))
    return f, g, tmp_path


def _gate(ref: str, new: str, data: str, eps: str, *prop: str, out: Path | None = None) -> int:
    args = ["gate", "--reference", ref, "--model", new, "--data", data, "--eps", eps,
            "--no-progress", "--timeout-per-sample", "60", *prop]
    if out is not None:
        args += ["--json", str(out / "g.json"), "--junit", str(out / "g.xml"),
                 "--sarif", str(out / "g.sarif"), "--report", str(out / "html")]
    return main(args)


@pytest.mark.parametrize("eps", ["0", "0.5", "3"])
def test_shift_is_proved_within_its_size(shift, eps, capsys):
    assert _gate(*shift, eps, "--max-diff", "0.31") == 0
    assert "GATE PASSED" in capsys.readouterr().out


def test_shift_is_refuted_below_its_size(shift, tmp_path, capsys):
    assert _gate(*shift, "0.5", "--max-diff", "0.29", out=tmp_path) == 1
    summary = json.loads((tmp_path / "g.json").read_text())
    assert summary["gate"] == "equivalence" and summary["property"] == "max-diff"
    assert summary["counts"]["falsified"] == 2
    for s in summary["samples"]:
        cex = s["counterexample"]
        assert cex["max_abs_diff"] == pytest.approx(0.3, abs=1e-6)
        x = np.array(cex["x"])
        x0 = [[0.0, 0.0], [1.0, -1.0]][s["index"]]
        assert np.all(np.abs(x - x0) <= 0.5)
        assert np.allclose(np.array(cex["y"]) - np.array(cex["reference_y"]), [0.3, -0.1],
                           atol=1e-6)
    suite = ET.parse(tmp_path / "g.xml").getroot().find("testsuite")
    assert suite.get("name") == "equivalence max-diff=0.29 eps=0.5"
    assert all("|model - reference| = 0.3" in f.get("message") for f in suite.iter("failure"))
    sarif = json.loads((tmp_path / "g.sarif").read_text())
    rules = [r["ruleId"] for r in sarif["runs"][0]["results"]]
    assert rules == ["equivalence/violated", "equivalence/violated", "gate/thresholds"]
    page = (tmp_path / "html" / "index.html").read_text()
    assert "against reference" in page and "|model - reference|_inf &lt; 0.29" in page


def test_scaled_relu_proved_above_the_exact_maximum(scaled_relu, capsys):
    assert _gate(*scaled_relu, "0.2", "--max-diff", "0.075") == 0


def test_scaled_relu_refuted_below_the_exact_maximum(scaled_relu, tmp_path):
    assert _gate(*scaled_relu, "0.2", "--max-diff", "0.065", out=tmp_path) == 1
    cex = json.loads((tmp_path / "g.json").read_text())["samples"][0]["counterexample"]
    x = np.array(cex["x"])
    assert np.all(np.abs(x - [0.5, 0.0]) <= 0.2 + 1e-7)
    assert 0.065 <= cex["max_abs_diff"] <= 0.07 + 1e-6
    assert cex["max_abs_diff"] == pytest.approx(0.1 * max(x.max(), 0.0), abs=1e-6)


@pytest.mark.parametrize("x0, eps, expected", [
    (1.0, 0.5, 0),   # [0.5, 1.5]: both class 0
    (-1.0, 0.5, 0),  # [-1.5, -0.5]: both class 1
    (0.3, 0.25, 1),  # [0.05, 0.55] meets (0, 0.1): f says 0, g says 1
    (-0.2, 0.25, 1),  # [-0.45, 0.05] meets (0, 0.05)
])
def test_same_label_exact(label, x0, eps, expected, tmp_path):
    f, g, d = label
    data = d / f"x{x0}.npz"
    np.savez(data, x=np.array([[x0]]))
    assert _gate(f, g, str(data), str(eps), "--same-label", out=tmp_path) == expected
    s = json.loads((tmp_path / "g.json").read_text())["samples"][0]
    assert s["label"] == (0 if x0 > 0 else 1)  # the reference's class at the sample
    if expected:
        cex = s["counterexample"]
        assert abs(cex["x"][0] - x0) <= eps
        assert np.argmax(cex["y"]) != np.argmax(cex["reference_y"]) or max(
            cex["reference_y"]) == min(cex["reference_y"])


def test_the_same_model_twice(scaled_relu, tmp_path):
    f, _, data = scaled_relu
    assert _gate(f, f, data, "0.2", "--max-diff", "1e-6") == 0
    assert _gate(f, f, data, "0.2", "--same-label") == 0  # x_1 >= 0.3 > 0.2 >= x_2
    both_off = tmp_path / "off.npz"
    np.savez(both_off, x=np.array([[-0.5, -0.5]]))  # relu(x) = [0, 0]: a tie, counted
    assert _gate(f, f, str(both_off), "0.2", "--same-label") == 1


def test_violation_matches_the_unsafe_set():
    d = EquivalenceProperty("r", "max-diff", 0.5)
    assert violation(d, [0.0, 1.0], [0.5, 1.0]) and not violation(d, [0.0, 1.0], [0.49, 1.4])
    s = EquivalenceProperty("r", "same-label")
    assert not violation(s, [1.0, 0.0], [2.0, 1.0])
    assert violation(s, [1.0, 0.0], [1.0, 1.0])  # the model ties
    assert violation(s, [1.0, 1.0], [2.0, 1.0])  # the reference ties


def test_merged_model_refuses_different_output_sizes(tmp_path):
    f = onnx.load(affine_model(tmp_path / "f.onnx", np.eye(2), np.zeros(2)))
    g = onnx.load(affine_model(tmp_path / "g.onnx", np.ones((3, 2)), np.zeros(3)))
    with pytest.raises(Exception, match="the reference has 2 output values, the model 3"):
        merged_model(f, g, "max-diff")


@pytest.mark.parametrize("extra, message", [
    (["--max-diff", "0.1"], "--max-diff and --same-label need --reference"),
    (["--reference", "REF"], "--reference needs --max-diff D or --same-label"),
    (["--reference", "REF", "--max-diff", "0"], "must be a finite number > 0"),
    (["--reference", "REF", "--max-diff", "0.1", "--same-label"], "not allowed with"),
])
def test_usage_errors_exit_2(shift, extra, message, capsys):
    f, g, data = shift
    extra = [f if a == "REF" else a for a in extra]
    try:  # argparse's own errors exit (status 2) from inside main
        rc = main(["gate", "--model", g, "--data", data, "--eps", "0.1", "--no-progress",
                   *extra])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_models_with_different_inputs_exit_2(shift, tmp_path, capsys):
    f, _, data = shift
    other = affine_model(tmp_path / "three.onnx", np.ones((2, 3)), np.zeros(2))
    assert _gate(f, other, data, "0.1", "--max-diff", "1") == 2
    assert "has shape [1, 2]" in capsys.readouterr().err


def test_a_float16_model_is_refused_by_the_model_check(tmp_path, capsys):
    """The verifier's IR computes in float32; the differential check against onnxruntime sees
    the float16 rounding and stops the gate (exit 2) instead of proving something unsound."""
    w = np.array([[1.0, -2.0], [0.5, 1.5]])
    f = affine_model(tmp_path / "f.onnx", w, np.zeros(2))
    g = float16_affine_model(tmp_path / "g16.onnx", w, np.array([0.25, 0.25]))
    data = tmp_path / "p.npz"
    np.savez(data, x=np.array([[0.25, -0.5]]))
    assert _gate(f, g, str(data), "0.5", "--max-diff", "0.3") == 2
    assert "disagrees with onnxruntime" in capsys.readouterr().err


@pytest.mark.parametrize("max_diff, status", [("0.3", 0), ("0.2", 1)])
def test_a_float16_model_without_the_model_check(tmp_path, max_diff, status, capsys):
    """g computes W x + 0.25 in float16 (weights exact in float16); on the ball of radius 0.5
    around [0.25, -0.5] float16 rounding moves g by < 2e-3, so |g - f| is within 0.25 +- 2e-3:
    proved below 0.3 (over real arithmetic, with a warning), refuted above 0.2 with a
    counterexample that onnxruntime confirms on the float16 model."""
    w = np.array([[1.0, -2.0], [0.5, 1.5]])
    f = affine_model(tmp_path / "f.onnx", w, np.zeros(2))
    g = float16_affine_model(tmp_path / "g16.onnx", w, np.array([0.25, 0.25]))
    data = tmp_path / "p.npz"
    np.savez(data, x=np.array([[0.25, -0.5]]))
    rc = _gate(f, g, str(data), "0.5", "--max-diff", max_diff, "--no-model-check", out=tmp_path)
    assert rc == status
    assert "float16 rounding inside the model is not covered" in capsys.readouterr().err
    s = json.loads((tmp_path / "g.json").read_text())["samples"][0]
    if status:
        assert 0.248 <= s["counterexample"]["max_abs_diff"] <= 0.252
