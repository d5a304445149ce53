"""MILP backends: HiGHS (highspy, open source, the default) and Gurobi (gurobipy, optional).

``solve(model, time_limit, backend)`` with backend ``auto`` tries Gurobi when gurobipy imports
and falls back to HiGHS when it is absent or refuses the model (the pip package's restricted
license limits model size and raises ``GurobiError`` at optimisation time); ``gurobi`` asks for
Gurobi but still falls back rather than fail; ``highs`` uses HiGHS only. Both run one thread.
HiGHS solves large models in a child process that is killed at the deadline (``highs_run``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from verifier.milp.highs_run import (
    INT_TOL,
    configured_highs,
    highs_lp,
    solve_arrays,
    solve_in_child,
    solver_limit,
)
from verifier.milp.highs_run import stop_highs_at as _stop_highs_at
from verifier.milp.model import MilpModel

log = logging.getLogger(__name__)

BACKENDS = ("auto", "highs", "gurobi")
_GUROBI_MISSING: str | None = None  # why gurobipy cannot be imported (cached)
_HIGHS_QUIET = False
_GUROBI_ENV = None
_GUROBI_LOCK = threading.Lock()
_HIGHS_LOCK = threading.Lock()
# Models with at least this many nonzeros are solved in a child process killed at the deadline
# (``highs_run``): HiGHS's clock checks came every 1-2.3 s on mnistfc 256x4 / ERAN 9x200's
# MILPs (530k / 420k nonzeros); a child costs about 0.1 s to start.
KILLABLE_NONZEROS = 100_000


@dataclass
class SolveResult:
    """status: optimal | feasible (a solution, not proven optimal) | infeasible | timeout |
    error; ``x`` the solution (when there is one)."""

    status: str
    x: np.ndarray | None = None
    objective: float = math.nan
    backend: str = ""
    nodes: int = 0
    note: str = ""
    # seconds from the call to the solver's first clock check (model building, presolve: the
    # part its time limit cannot cut short; the whole call when it never checked)
    fixed_s: float = 0.0


class BackendUnavailable(RuntimeError):
    """The backend cannot solve this model here (not installed, license limit, ...)."""


def _new_highs():
    """A Highs object. The first one in a process prints a banner on the C-level stdout, which
    would corrupt the CLI's first output line (and on stderr would read as a message to the
    user), so that construction writes to the null device instead."""
    global _HIGHS_QUIET
    import highspy

    if _HIGHS_QUIET:
        return highspy.Highs()
    with _HIGHS_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)
        _HIGHS_QUIET = True
    return h


def _solver_arrays(model: MilpModel) -> dict:
    """``model.arrays()`` with its rows also as the CSR pieces HiGHS takes."""
    a = model.arrays()
    csr = a["A"]
    a.update(indptr=csr.indptr, indices=csr.indices, data=csr.data)
    return a


def _highs(model: MilpModel, time_limit: float) -> SolveResult:
    stop = time.monotonic() + max(float(time_limit), 0.01)
    a = _solver_arrays(model)
    csr = a.pop("A")  # (the child gets plain arrays: no scipy to import there)
    out = solve_in_child(a, stop) if csr.nnz >= KILLABLE_NONZEROS else None
    if out is None:  # a small model, or the child failed: here, with HiGHS's own limit
        out = solve_arrays(a, stop, _new_highs)
    return SolveResult(backend="highs", **out)


def _import_gurobi():
    global _GUROBI_MISSING
    if _GUROBI_MISSING is not None:
        raise BackendUnavailable(_GUROBI_MISSING)
    try:
        import gurobipy
    except ImportError as exc:
        _GUROBI_MISSING = f"gurobipy not importable: {exc}"
        raise BackendUnavailable(_GUROBI_MISSING) from None
    return gurobipy


def _gurobi_env(gp):
    """One quiet Gurobi environment per process (starting one checks the license: slow)."""
    global _GUROBI_ENV
    if _GUROBI_ENV is None:
        env = gp.Env(empty=True)
        env.setParam("OutputFlag", 0)
        env.start()
        _GUROBI_ENV = env
    return _GUROBI_ENV


def _gurobi(model: MilpModel, time_limit: float) -> SolveResult:
    gp = _import_gurobi()
    grb = gp.GRB
    start = time.monotonic()
    stop = start + max(float(time_limit), 0.01)
    a = model.arrays()
    try:
        with _GUROBI_LOCK:
            m = gp.Model(env=_gurobi_env(gp))
        try:
            m.Params.Threads = 1
            m.Params.Seed = 0
            m.Params.IntFeasTol = INT_TOL
            vtype = np.where(a["integer"], grb.INTEGER, grb.CONTINUOUS)
            lo = np.where(np.isfinite(a["col_lo"]), a["col_lo"], -grb.INFINITY)
            hi = np.where(np.isfinite(a["col_hi"]), a["col_hi"], grb.INFINITY)
            v = m.addMVar(model.n_cols, lb=lo, ub=hi, vtype=vtype)
            csr = a["A"]
            up = np.isfinite(a["row_hi"])
            dn = np.isfinite(a["row_lo"])
            if up.any():
                m.addMConstr(csr[up], v, "<", a["row_hi"][up])
            if dn.any():
                m.addMConstr(csr[dn], v, ">", a["row_lo"][dn])
            m.setObjective(a["cost"] @ v, grb.MINIMIZE)
            m.Params.TimeLimit = solver_limit(stop)
            fixed = time.monotonic() - start
            m.optimize()
            result = _gurobi_result(m, v, grb)
            result.fixed_s = fixed
            return result
        finally:
            m.dispose()
    except gp.GurobiError as exc:
        raise BackendUnavailable(f"gurobi refused the model: {exc}") from None


def _gurobi_result(m, v, grb) -> SolveResult:
    nodes = int(m.NodeCount) if m.Status != grb.LOADED else 0
    x = np.array(v.X) if m.SolCount > 0 else None
    if m.Status == grb.OPTIMAL:
        return SolveResult("optimal", x, float(m.ObjVal), "gurobi", nodes)
    if m.Status in (grb.INFEASIBLE, grb.INF_OR_UNBD):
        # INF_OR_UNBD cannot be unbounded here: every column has finite bounds.
        return SolveResult("infeasible", None, math.inf, "gurobi", nodes)
    if m.Status in (grb.TIME_LIMIT, grb.INTERRUPTED, grb.NODE_LIMIT, grb.SOLUTION_LIMIT):
        if x is not None:
            return SolveResult("feasible", x, float(m.ObjVal), "gurobi", nodes)
        return SolveResult("timeout", None, math.nan, "gurobi", nodes)
    return SolveResult("error", x, math.nan, "gurobi", nodes, note=f"status {m.Status}")


def solve(model: MilpModel, time_limit: float, backend: str = "auto") -> SolveResult:
    """Minimise the model's objective with the chosen backend (see module doc for fallback)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown MILP backend {backend!r}; choose from {', '.join(BACKENDS)}")
    note = ""
    if backend in ("auto", "gurobi"):
        try:
            return _gurobi(model, time_limit)
        except BackendUnavailable as exc:
            note = str(exc)
            level = logging.WARNING if backend == "gurobi" else logging.DEBUG
            log.log(level, "%s; falling back to HiGHS", note)
    result = _highs(model, time_limit)
    result.note = note or result.note
    return result


class HighsBounder:
    """One HiGHS model, many linear objectives: sound lower bounds of ``c @ v`` over the model.

    LP mode (integrality dropped, the default): the bound is not the solver's objective but the
    weak-duality value ``sum_i min(y_i lo_i, y_i hi_i) + sum_j min(d_j l_j, d_j u_j)`` with
    ``d = c - A^T y`` for the solver's row duals ``y``. That holds for *any* ``y``, so solver
    tolerances cannot make it unsound (only loose); it is evaluated in float64 and widened by a
    relative 1e-9. MILP mode: HiGHS's MIP dual bound, widened by ``1e-6 (1 + |b|)`` (its
    feasibility tolerance: sound up to the solver's own LP tolerances, not rigorous).
    Successive objectives warm-start from the previous basis.
    """

    def __init__(self, model: MilpModel, integer: bool = False):
        self.a = _solver_arrays(model)
        self.integer = bool(integer and self.a["integer"].any())
        self.h = h = configured_highs(_new_highs)
        lp = highs_lp(self.a, np.zeros(model.n_cols), self.integer)
        if self.integer:
            h.setOptionValue("mip_feasibility_tolerance", INT_TOL)
        h.passModel(lp)
        self._stop = math.inf  # the current minimum's end (its interrupt callbacks read it)
        _stop_highs_at(h, lambda: self._stop)
        self._cost_idx = np.zeros(0, dtype=np.int32)
        self.csc = self.a["A"].tocsc()

    def minimum(self, idx: np.ndarray, coef: np.ndarray, time_limit: float) -> float:
        """A sound lower bound of ``coef @ v[idx]`` over the model (``-inf`` when unsure)."""
        import highspy

        h = self.h
        if self._cost_idx.size:
            h.changeColsCost(self._cost_idx.size, self._cost_idx, np.zeros(self._cost_idx.size))
        idx = np.asarray(idx, dtype=np.int32)
        h.changeColsCost(idx.size, idx, np.asarray(coef, dtype=np.float64))
        self._cost_idx = idx
        # HiGHS's clock runs over the object's life, not per run()
        stop = time.monotonic() + max(float(time_limit), 0.01)
        h.setOptionValue("time_limit", h.getRunTime() + solver_limit(stop))
        self._stop = stop
        h.run()
        status = h.getModelStatus()
        if self.integer:
            info = h.getInfo()
            bound = float(info.mip_dual_bound)
            if status == highspy.HighsModelStatus.kInfeasible:
                return math.inf
            return bound - 1e-6 * (1 + abs(bound)) if math.isfinite(bound) else -math.inf
        if status == highspy.HighsModelStatus.kInfeasible:
            return math.inf
        if status != highspy.HighsModelStatus.kOptimal:
            return -math.inf
        y = np.asarray(h.getSolution().row_dual)
        cost = np.zeros(len(self.a["cost"]))
        cost[idx] = coef
        return max(self._dual_value(cost, y), self._dual_value(cost, -y))

    def _dual_value(self, cost: np.ndarray, y: np.ndarray) -> float:
        a = self.a
        y = np.where((y > 0) & ~np.isfinite(a["row_lo"]), 0.0, y)
        y = np.where((y < 0) & ~np.isfinite(a["row_hi"]), 0.0, y)
        d = cost - self.csc.T @ y
        with np.errstate(invalid="ignore"):
            rows = np.where(y > 0, y * a["row_lo"], np.where(y < 0, y * a["row_hi"], 0.0))
            cols = np.where(d > 0, d * a["col_lo"], np.where(d < 0, d * a["col_hi"], 0.0))
        total = float(rows.sum() + cols.sum())
        if not math.isfinite(total):
            return -math.inf
        return total - 1e-9 * (1.0 + float(np.abs(rows).sum() + np.abs(cols).sum()))
