"""Backends: HiGHS and Gurobi agree; gurobipy's absence or license limit falls back to HiGHS."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import verifier.milp.backends as backends
import verifier.milp.highs_run as highs_run
from tests.milp.nets import make_spec, onnx_mlp, random_layers
from verifier.milp import MilpOptions, milp_verify
from verifier.milp.encode import MilpUnsupportedError, check_supported
from verifier.milp.model import Expr, MilpModel

ROOT = Path(__file__).resolve().parents[2]


def _knapsack() -> MilpModel:
    """max x0 + 2 x1 (min the negative) with x0 + x1 <= 1.5, x binary: optimum -2."""
    m = MilpModel()
    x = m.add_vars([0, 0], [1, 1], integer=True)
    m.add_rows(Expr(x, np.array([[1.0, 1.0]]), np.zeros(1)), -np.inf, 1.5)
    m.objective = {int(x[0]): -1.0, int(x[1]): -2.0}
    return m


def test_highs_solves_small_milp():
    out = backends.solve(_knapsack(), 10, "highs")
    assert out.status == "optimal" and out.objective == pytest.approx(-2.0)
    assert out.backend == "highs"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown MILP backend"):
        backends.solve(_knapsack(), 10, "cplex")


@pytest.fixture
def no_gurobipy(monkeypatch):
    """Make ``import gurobipy`` fail, whether or not it is installed."""
    monkeypatch.setattr(backends, "_GUROBI_MISSING", None)
    monkeypatch.setitem(sys.modules, "gurobipy", None)


@pytest.fixture
def limited_gurobipy(monkeypatch):
    """A stand-in gurobipy whose every model hits the size-limited license error."""

    class GurobiError(Exception):
        pass

    class Env:
        def __init__(self, empty=False):
            pass

        def setParam(self, *_):
            pass

        def start(self):
            pass

    def model(env=None):
        raise GurobiError("Model too large for size-limited license; visit "
                          "https://gurobi.com/unrestricted for more information")

    fake = types.SimpleNamespace(GurobiError=GurobiError, Env=Env, Model=model, GRB=None)
    monkeypatch.setattr(backends, "_GUROBI_MISSING", None)
    monkeypatch.setattr(backends, "_GUROBI_ENV", None)
    monkeypatch.setitem(sys.modules, "gurobipy", fake)


@pytest.mark.parametrize("backend", ["auto", "gurobi"])
def test_missing_gurobipy_falls_back(no_gurobipy, backend):
    out = backends.solve(_knapsack(), 10, backend)
    assert out.backend == "highs" and out.status == "optimal"
    assert "gurobipy not importable" in out.note


@pytest.mark.parametrize("backend", ["auto", "gurobi"])
def test_license_limit_falls_back(limited_gurobipy, backend):
    out = backends.solve(_knapsack(), 10, backend)
    assert out.backend == "highs" and out.status == "optimal"
    assert "size-limited" in out.note


def test_verdict_unchanged_under_fallback(limited_gurobipy):
    layers = random_layers([2, 4, 2], np.random.default_rng(1))
    spec = make_spec([(-np.ones(2), np.ones(2))], [[[1.0, -1.0]]], [[100.0]])
    verdict, cex, stats = milp_verify(onnx_mlp(layers), spec, time.monotonic() + 30,
                                      options=MilpOptions(use_crown=False))
    assert verdict == "sat" and cex is not None
    solves = stats["region_0"]["solves"]
    assert solves and all(s["backend"] == "highs" for s in solves)


def test_backends_agree_when_gurobi_is_usable():
    pytest.importorskip("gurobipy")
    try:
        out_g = backends._gurobi(_knapsack(), 10)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
    out_h = backends.solve(_knapsack(), 10, "highs")
    assert out_g.status == out_h.status == "optimal"
    assert out_g.objective == pytest.approx(out_h.objective)


def test_unsupported_op_gives_unknown():
    from bounds.graph import Graph, Node, TensorInfo
    from verifier.onnx_import.loader import ImportedModel

    graph = Graph((TensorInfo("x", (1, 2)),), (TensorInfo("s", (1, 2)),),
                  (Node("s", "Mul", ("x", "x"), (1, 2)),))
    with pytest.raises(MilpUnsupportedError, match="Mul"):
        check_supported(graph)
    model = ImportedModel(graph, b"", ("x",), ("s",), ((1, 2),))
    spec = make_spec([(-np.ones(2), np.ones(2))], [[[1.0, 0.0]]], [[0.0]])
    verdict, cex, stats = milp_verify(model, spec, time.monotonic() + 5)
    assert verdict == "unknown" and cex is None and "Mul" in stats["reason"]


def _instances(root, names):
    with open(root / "expected.csv") as f:
        rows = {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(f)}
    return [(o, v, rows[(o, v)]) for o, v in names]


TEST_SET = [("onnx/test_nano.onnx", "vnnlib/test_nano.vnnlib"),
            ("onnx/test_tiny.onnx", "vnnlib/test_tiny.vnnlib"),
            ("onnx/test_small.onnx", "vnnlib/test_small.vnnlib"),
            ("onnx/test_sat.onnx", "vnnlib/test_prop.vnnlib"),
            ("onnx/test_unsat.onnx", "vnnlib/test_prop.vnnlib")]


@pytest.mark.parametrize(("backend", "use_crown"), [("highs", False), ("auto", True)])
def test_benchmark_test_set(benchmarks_dir, backend, use_crown):
    from verifier.onnx_import.loader import load_model
    from verifier.spec import load_spec

    root = benchmarks_dir / "test"
    for onnx_path, vnnlib, expected in _instances(root, TEST_SET):
        model, spec = load_model(root / onnx_path), load_spec(root / vnnlib)
        opts = MilpOptions(backend=backend, use_crown=use_crown)
        verdict, _, stats = milp_verify(model, spec, time.monotonic() + 60, options=opts)
        assert verdict == expected, (onnx_path, stats)


def _market_split(m_rows: int = 4, seed: int = 0) -> MilpModel:
    """Cornuejols-Dawande market split: sum_j a_ij x_j + s_i = d_i with |s| minimised, x binary
    (10 (m - 1) of them): small, and hard for LP-based branch-and-bound."""
    rng = np.random.default_rng(seed)
    n = 10 * (m_rows - 1)
    a = rng.integers(0, 100, size=(m_rows, n)).astype(np.float64)
    m = MilpModel()
    x = m.add_vars(np.zeros(n), np.ones(n), integer=True)
    plus = m.add_vars(np.zeros(m_rows), np.full(m_rows, np.inf))
    minus = m.add_vars(np.zeros(m_rows), np.full(m_rows, np.inf))
    cols = np.concatenate([x, plus, minus])
    mat = np.concatenate([a, np.eye(m_rows), -np.eye(m_rows)], axis=1)
    d = np.floor(a.sum(axis=1) / 2)
    m.add_rows(Expr(cols, mat, np.zeros(m_rows)), d, d)
    m.objective = {int(c): 1.0 for c in np.concatenate([plus, minus])}
    return m


@pytest.mark.parametrize("limit", [0.5, 2.0])
def test_highs_returns_within_its_time_limit(limit):
    """The solve ends by its limit (from the call, model building included), not a check of
    HiGHS's clock later: a stage gives the solver the time to its own deadline."""
    model = _market_split()
    start = time.monotonic()
    out = backends.solve(model, limit, "highs")
    assert time.monotonic() - start <= limit
    assert out.status in ("timeout", "feasible")


def test_solver_limit_keeps_slack_for_the_solver_clock():
    now = time.monotonic()
    assert backends.solver_limit(now - 1.0) == 0.01
    assert 0.0 < backends.solver_limit(now + 0.5) < 0.5 * 0.8
    long = backends.solver_limit(now + 300.0)
    assert 300.0 - highs_run.SLACK_S - 3.0 - 0.1 < long < 300.0 - highs_run.SLACK_S - 3.0 + 0.01


@pytest.fixture
def in_child(monkeypatch):
    """Every HiGHS solve in a child process (``highs_run.solve_in_child``)."""
    monkeypatch.setattr(backends, "KILLABLE_NONZEROS", 0)


def test_a_child_process_solves_and_returns_the_solution(in_child):
    out = backends.solve(_knapsack(), 10, "highs")
    assert out.status == "optimal" and out.objective == pytest.approx(-2.0)
    assert out.x is not None and list(np.round(out.x)) == [0.0, 1.0]
    assert out.fixed_s > 0.0


@pytest.mark.parametrize("limit", [0.5, 2.0])
def test_a_child_process_returns_within_its_time_limit(in_child, limit):
    start = time.monotonic()
    out = backends.solve(_market_split(), limit, "highs")
    assert time.monotonic() - start <= limit
    assert out.status in ("timeout", "feasible")


def test_a_child_process_that_does_not_answer_is_stopped_at_the_deadline(in_child,
                                                                         monkeypatch):
    monkeypatch.setattr(highs_run, "child_command",
                        lambda: [sys.executable, "-c", "import time; time.sleep(60)"])
    start = time.monotonic()
    out = backends.solve(_knapsack(), 0.5, "highs")
    assert time.monotonic() - start < 1.5  # killed at 0.5 s, not waited for
    assert out.status == "timeout" and "deadline" in out.note


def test_a_child_process_that_fails_leaves_the_solve_to_this_process(in_child, monkeypatch):
    monkeypatch.setattr(highs_run, "child_command", lambda: [sys.executable, "-c", "exit(3)"])
    out = backends.solve(_knapsack(), 5, "highs")
    assert out.status == "optimal" and out.objective == pytest.approx(-2.0)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_child_process_ends_with_its_parent():
    """A service worker killed with its job must not leave its solver running."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, 'tests/milp'); sys.path.insert(0, '.')\n"
        "import verifier.milp.backends as b\n"
        "from test_milp_backends import _market_split\n"
        "b.KILLABLE_NONZEROS = 0\n"
        "b.solve(_market_split(), 60, 'highs')\n")], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        kids = []
        while not kids and time.monotonic() < deadline:
            time.sleep(0.1)
            kids = _children(parent.pid)
        assert kids, "the solver's child process did not start"
        parent.kill()
        parent.wait()
        end = time.monotonic() + 10 * highs_run.ORPHAN_CHECK_S
        while any(_alive(k) for k in kids) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids)
    finally:
        parent.kill()
