"""One HiGHS solve of a MILP given as arrays, in this process or in a child process that is
killed at the deadline.

HiGHS reads its clock only between phases it cannot interrupt: on ERAN 9x200's MILP (its root
LP, then separation rounds) it ran up to 1.6 s past its own time limit, and its interrupt
callbacks came every 2.3 s. A stage whose solve must end by the run's deadline cannot rely on
either, so large models are solved in a child (``solve_in_child``: this file run as a script,
importing numpy and highspy only) that is killed when the deadline comes.

This module imports nothing of nncert: the child runs it by path.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

# Integrality tolerance: a binary off by eps moves a big-M row by eps * M, and ReLU bounds of
# 100s are common, so the solvers' defaults (1e-6, 1e-5) give fake optima; 1e-9 is Gurobi's
# smallest allowed value. Candidates are re-solved with the binaries fixed anyway (verify.py).
INT_TOL = 1e-9
# The limit given to the solver is what is left when it starts, less min(SLACK_S, 20%) +
# SLACK_SHARE of it: its own clock checks come late (above).
SLACK_S = 1.0
SLACK_SHARE = 0.01
# Seconds a killed child may take to go; the kill comes this long before the deadline, so
# that the solve still ends by it.
KILL_WAIT_S = 5.0
KILL_RESERVE_S = 0.05
# How often a child looks whether its parent is still there.
ORPHAN_CHECK_S = 0.5


def solver_limit(stop: float) -> float:
    """Seconds to give a solver that starts now and must be done by ``stop`` (monotonic)."""
    left = stop - time.monotonic()
    return max(left - min(SLACK_S, 0.2 * left) - SLACK_SHARE * left, 0.01)


def stop_highs_at(h, stop: Callable[[], float], first: list | None = None) -> None:
    """Interrupt ``h``'s simplex, IPM and MIP at ``stop()`` (monotonic) from its interrupt
    callbacks, a second check beside its time limit; ``first`` gets the time of the first
    callback."""

    def interrupt(event) -> None:
        now = time.monotonic()
        if first is not None and not first:
            first.append(now)
        if now >= stop():
            event.interrupt()

    h.cbSimplexInterrupt += interrupt
    h.cbIpmInterrupt += interrupt
    h.cbMipInterrupt += interrupt


def configured_highs(new_highs: Callable):
    """A quiet, single-threaded, seeded Highs object from ``new_highs()``."""
    h = new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    return h


def highs_lp(a: dict, cost: np.ndarray, integer: bool):
    """The HighsLp of the arrays ``a`` (bounds, rows as CSR ``indptr``/``indices``/``data``,
    ``integer`` flags: kept only when ``integer``) with objective ``cost``."""
    import highspy

    n_cols, n_rows = len(a["col_lo"]), len(a["row_lo"])
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_cols, n_rows
    lp.col_cost_ = cost
    lp.col_lower_, lp.col_upper_ = a["col_lo"], a["col_hi"]
    lp.row_lower_, lp.row_upper_ = a["row_lo"], a["row_hi"]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = a["indptr"].astype(np.int32)
    lp.a_matrix_.index_ = a["indices"].astype(np.int32)
    lp.a_matrix_.value_ = a["data"]
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n_cols, n_rows
    if integer:
        kind = highspy.HighsVarType
        lp.integrality_ = [kind.kInteger if i else kind.kContinuous for i in a["integer"]]
    return lp


def solve_arrays(a: dict, stop: float, new_highs: Callable | None = None) -> dict:
    """Minimise ``a["cost"] @ v`` subject to the arrays' bounds, rows (CSR: ``indptr``,
    ``indices``, ``data``) and integrality, by ``stop`` (monotonic). Returns the fields of a
    ``backends.SolveResult``: status, x, objective, nodes, note, fixed_s."""
    import highspy

    start = time.monotonic()
    h = configured_highs(new_highs or highspy.Highs)
    h.setOptionValue("mip_feasibility_tolerance", INT_TOL)
    h.passModel(highs_lp(a, a["cost"], bool(a["integer"].any())))
    # HiGHS's clock runs from the object's creation, and building the model took some of it
    h.setOptionValue("time_limit", h.getRunTime() + solver_limit(stop))
    first: list[float] = []
    stop_highs_at(h, lambda: stop, first)
    h.run()
    out = _result(h, highspy)
    out["fixed_s"] = (first[0] if first else time.monotonic()) - start
    return out


def _result(h, highspy) -> dict:
    status = h.getModelStatus()
    info = h.getInfo()
    nodes = int(getattr(info, "mip_node_count", 0) or 0)
    has_sol = info.primal_solution_status == 2
    x = np.array(h.getSolution().col_value) if has_sol else None
    ms = highspy.HighsModelStatus
    out = {"x": x, "objective": math.nan, "nodes": nodes, "note": ""}
    if status == ms.kOptimal:
        return {**out, "status": "optimal", "objective": info.objective_function_value}
    if status == ms.kInfeasible:
        return {**out, "status": "infeasible", "x": None, "objective": math.inf}
    if status in (ms.kTimeLimit, ms.kInterrupt, ms.kIterationLimit, ms.kSolutionLimit):
        if x is not None:
            return {**out, "status": "feasible", "objective": info.objective_function_value}
        return {**out, "status": "timeout"}
    return {**out, "status": "error", "note": h.modelStatusToString(status)}


def child_command() -> list[str]:
    # -P: not this file's folder on the path (its modules' names must not shadow any the
    # child imports); PYTHONPATH stays (where highspy may come from)
    return [sys.executable, "-P", os.path.abspath(__file__), str(os.getpid())]


def solve_in_child(a: dict, stop: float) -> dict | None:
    """``solve_arrays`` in a child process, killed at ``stop`` (monotonic: one clock for the
    whole machine) when it has not answered by then; None when the child failed (no
    process, no highspy there, a crash): solve here instead."""
    start = time.monotonic()
    payload = pickle.dumps((a, stop), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    try:
        data, _ = proc.communicate(
            payload, timeout=max(stop - KILL_RESERVE_S - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=KILL_WAIT_S)
        return {"status": "timeout", "x": None, "objective": math.nan, "nodes": 0,
                "note": "solver process stopped at the deadline",
                "fixed_s": time.monotonic() - start}
    if proc.returncode != 0 or not data:
        return None
    out = pickle.loads(data)
    out["fixed_s"] += time.monotonic() - start - out.pop("child_s")
    return out


def _exit_with_parent(parent: int, interval_s: float = ORPHAN_CHECK_S) -> None:
    """End this process once its parent ``parent`` is gone (a service worker killed with its
    job, a cancelled run): a solver left running would hold a core until its own time limit.
    The parent names itself: one that died before this process started would otherwise be
    replaced by the process that adopted it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _child(parent: int) -> None:
    _exit_with_parent(parent)
    # C-level prints of HiGHS (its banner) must not mix with the result on stdout
    result_fd = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    start = time.monotonic()
    a, stop = pickle.load(sys.stdin.buffer)
    out = solve_arrays(a, stop)
    out["child_s"] = time.monotonic() - start
    with os.fdopen(result_fd, "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    _child(int(sys.argv[1]))
