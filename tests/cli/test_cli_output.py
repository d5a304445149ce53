"""Results-file and VNN-LIB 2.0 assignment formats (pure functions)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

from verifier.cli.output import (
    declared_variables,
    vnncomp_counterexample,
    vnncomp_result_text,
    vnnlib2_assignment,
    vnnlib2_result_text,
)

PAIR = re.compile(r"\(([XY])_(\d+) ([^\s)]+)\)")


def parse_vnncomp(text: str) -> tuple[list[float], list[float]]:
    """Read a VNN-COMP counterexample back: (x values, y values) in index order."""
    xs, ys = {}, {}
    for kind, index, value in PAIR.findall(text):
        (xs if kind == "X" else ys)[int(index)] = float(value)
    return [xs[i] for i in range(len(xs))], [ys[i] for i in range(len(ys))]


def test_counterexample_layout():
    text = vnncomp_counterexample(np.array([[1.5, -2.0]]), np.array([0.25]))
    assert text == "((X_0 1.5)\n (X_1 -2.0)\n (Y_0 0.25))"


def test_float32_values_round_trip():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200) * 10.0 ** rng.integers(-8, 8, 200)).astype(np.float32)
    y = rng.standard_normal(7).astype(np.float32)
    xs, ys = parse_vnncomp(vnncomp_counterexample(x.reshape(2, 100), y))
    assert np.array_equal(np.asarray(xs, dtype=np.float32), x)
    assert np.array_equal(np.asarray(ys, dtype=np.float32), y)
    assert np.array_equal(np.asarray(xs), x.astype(np.float64))  # exact as float64 too


def test_result_text():
    cex = SimpleNamespace(x=np.array([1.0]), y=np.array([2.0]))
    assert vnncomp_result_text("unsat") == "unsat\n"
    assert vnncomp_result_text("sat", cex) == "sat\n((X_0 1.0)\n (Y_0 2.0))\n"


def test_vnnlib2_assignment_and_names():
    decl = SimpleNamespace(networks=(SimpleNamespace(
        name="f",
        inputs=(SimpleNamespace(name="A", dtype="float32", shape=(2, 2)),),
        outputs=(SimpleNamespace(name="Y", dtype="float32", shape=(1,)),),
    ),))
    inputs, outputs = declared_variables(decl)
    assert inputs[0].name == "A" and inputs[0].shape == (2, 2)
    text = vnnlib2_assignment(inputs, np.array([0.5, 0.3, 0.4, 0.2]))
    assert text.splitlines() == ["A float32 [2,2]", "0.5", "0.3", "0.4", "0.2"]
    cex = SimpleNamespace(x=np.array([0.5, 0.3, 0.4, 0.2]), y=np.array([0.1]))
    out = vnnlib2_result_text("sat", cex, decl, model=None).splitlines()
    assert out[0] == "sat" and out[6:] == ["Y float32 [1]", "0.1"]
    assert vnnlib2_result_text("timeout", None, decl, None) == "timed-out\n"


def test_no_declarations_falls_back_to_model_names():
    model = SimpleNamespace(graph=SimpleNamespace(
        inputs=[SimpleNamespace(shape=(1, 2))], outputs=[SimpleNamespace(shape=(1, 2))]))
    cex = SimpleNamespace(x=np.zeros(2), y=np.ones(2))
    out = vnnlib2_result_text("sat", cex, SimpleNamespace(networks=()), model).splitlines()
    assert out == ["sat", "X float32 [1,2]", "0.0", "0.0", "Y float32 [1,2]", "1.0", "1.0"]
