"""``nncert verify QUERY --network ...`` on composed queries: the first stdout line, the
assignment of every declared tensor in declaration order, equal-to networks, the capability
answers, and bad queries refused with one line naming the problem (exit 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.cli.cli_util import assert_one_line_error, run_nncert
from tests.compose.nets import relu_net

F = relu_net([[1, -1], [1, 1]], [0, 0], [[1, 1]], [0])  # y = relu(x0-x1) + relu(x0+x1)
NETS = """(vnnlib-version <2.0>)
(declare-network f (declare-input X float32 [1,2]) (declare-hidden H float32 [1,2] "h")
  (declare-output Y float32 [1,1]))
(declare-network g (equal-to f) (declare-input U float32 [1,2]) (declare-output W float32 [1,1]))
(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] -1) (<= X[0,1] 1)))
(assert (and (>= U[0,0] -1) (<= U[0,0] 1) (>= U[0,1] -1) (<= U[0,1] 1)))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("nets") / "f.onnx"
    onnx.save(F, path)
    return path


def _query(tmp_path, text: str):
    path = tmp_path / "q.vnnlib"
    path.write_text(text)
    return path


def _assignment(lines: list[str]) -> dict[str, np.ndarray]:
    out, i = {}, 0
    while i < len(lines):
        name, _dtype, dims = lines[i].split()
        shape = tuple(int(d) for d in dims.strip("[]").split(","))
        n = int(np.prod(shape))
        out[name] = np.array([float(v) for v in lines[i + 1:i + 1 + n]]).reshape(shape)
        i += 1 + n
    return out


def test_monotone_in_x0_is_unsat(tmp_path, model):
    """y is non-decreasing in x0: x0 <= u0 - 0.1, x1 = u1, y >= w + 0.01 has no solution."""
    q = _query(tmp_path, NETS + "(assert (= X[0,1] U[0,1]))(assert (<= (- X[0,0] U[0,0]) -0.1))"
                                "(assert (>= Y[0,0] (+ W[0,0] 0.01)))")
    proc = run_nncert("verify", q, "--network", f"f={model}", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["unsat"]
    assert "HiGHS" not in proc.stderr  # the solver's banner is not a message to the user


def test_not_monotone_in_x1_is_sat_with_the_assignment(tmp_path, model):
    q = _query(tmp_path, NETS + "(assert (= X[0,0] U[0,0]))(assert (<= (- X[0,1] U[0,1]) -0.1))"
                                "(assert (>= Y[0,0] (+ W[0,0] 0.01)))")
    results = tmp_path / "results.txt"
    proc = run_nncert("verify", q, "--network", f"f={model}", "--timeout", "30",
                      "--results-file", results)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sat"
    # VNN-COMP form: every declared input element (X, U), then every value (H, Y, W)
    text = results.read_text()
    assert text.startswith("sat\n((X_0 ") and "(X_3 " in text and "(X_4 " not in text
    assert "(Y_3 " in text and "(Y_4 " not in text
    a = _assignment(lines[1:])
    assert list(a) == ["X", "H", "Y", "U", "W"]
    x, u = a["X"].reshape(2).astype(np.float32), a["U"].reshape(2).astype(np.float32)
    h = np.maximum([x[0] - x[1], x[0] + x[1]], 0)
    np.testing.assert_allclose(a["H"].reshape(2), h, rtol=1e-6)
    assert x[0] == u[0] and x[1] - u[1] <= -0.1 and a["Y"].item() >= a["W"].item() + 0.01


def test_model_and_query_positional_form_binds_the_one_model(tmp_path, model):
    """``nncert verify MODEL QUERY``: the model stands for f and for g (equal-to f); the
    answer is in VNN-COMP form, every declared input element then every value."""
    q = _query(tmp_path, NETS + "(assert (= X[0,0] U[0,0]))(assert (<= (- X[0,1] U[0,1]) -0.1))"
                                "(assert (>= Y[0,0] (+ W[0,0] 0.01)))")
    proc = run_nncert("verify", model, q, "--timeout", "30")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ")
    assert sum(line.lstrip(" (").startswith("X_") for line in lines) == 4
    assert sum(line.lstrip(" (").startswith("Y_") for line in lines) == 4  # H, Y, W


def test_model_and_query_positional_form_refuses_two_networks(tmp_path, model):
    text = NETS.replace("(equal-to f) ", "")
    q = _query(tmp_path, text + "(assert (>= Y[0,0] 100))")
    line = assert_one_line_error(run_nncert("verify", model, q))
    assert "2 networks that are not equal-to another (f, g)" in line, line


@pytest.mark.parametrize("options, message", [
    ([], "network f has no model"),
    (["--network", "g={m}"], "not declared"),  # g has no --network of its own
    (["--network", "f={m}", "--network", "g={m}"], "give no --network for it"),
    (["--network", "f={m}", "--network", "h={m}"], "'h' is not declared"),
])
def test_network_options_are_checked(tmp_path, model, options, message):
    q = _query(tmp_path, NETS + "(assert (>= Y[0,0] 100))")
    options = [o.format(m=model) for o in options]
    if not options:
        options = ["--network", f"g={model}"]
        message = "give no --network"
    line = assert_one_line_error(run_nncert("verify", q, *options))
    assert message in line or "network" in line, line


@pytest.mark.parametrize("decl, message", [
    ('(declare-hidden H float32 [1,2] "nope")', "no node of the model computes a value named"),
    ('(declare-hidden H float32 [1,3] "h")', "H has 3 elements"),
    ('(declare-hidden H float64 [1,2] "h")', "element type float64"),
    ('(declare-hidden H float32 [1,2])', "needs the name of its ONNX value"),
])
def test_bad_hidden_declarations(tmp_path, model, decl, message):
    q = _query(tmp_path, "(vnnlib-version <2.0>)(declare-network f (declare-input X float32 [1,2])"
                         f" {decl} (declare-output Y float32 [1,1]))"
                         "(assert (and (>= X[0,0] 0) (<= X[0,0] 1) (>= X[0,1] 0) (<= X[0,1] 1)))"
                         "(assert (>= H[0,0] 5))")
    line = assert_one_line_error(run_nncert("verify", q, "--network", f"f={model}"))
    assert message in line, line


def test_capabilities_name_every_theory():
    expected = {"hidden-node-theories": ["NH", "H"],
                "multiple-input-output-theories": ["SIO", "MIO"],
                "multiple-network-theories": ["SNET", "MENET", "MINET", "MNET"],
                "multiple-node-comparison-theories": ["SNC", "MNC"],
                "arithmetic-complexity-theories": ["BND", "OUTC", "LIN", "POLY"],
                "hidden-nodes": ["true"], "multiple-networks": ["true"]}
    for capability, lines in expected.items():
        proc = run_nncert("supports", f"--{capability}")
        assert proc.stdout.splitlines() == lines, capability
