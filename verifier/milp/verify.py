"""Complete verification by MILP: ``milp_verify(model, spec, deadline, backend)``.

Per input region: CROWN bounds, then alpha-CROWN ones where CROWN leaves a disjunct open
(``MilpOptions.alpha_bounds``): intermediate bounds for the big-M constants, and a cheap first
try that may refute some disjuncts; one encoding of the network, then one solve per
open disjunct d of

    minimise t  s.t.  x in box,  y = net(x),  coef[d, k] @ y - t <= rhs[d, k] + tol_k (all k),
                      -cap <= t <= 0.

Infeasible means no x in the box satisfies disjunct d (``unsat`` for it). Soundness for the
float32 network: the encoding adds each node's float32 rounding allowance (see encode.py), and
``tol_k = ABS_TOL + REL_TOL |rhs|`` absorbs the solver's own
feasibility tolerances (HiGHS and Gurobi default to 1e-6 on rows, 1e-6/1e-5 on integrality; a
looser MILP only admits more points, so those can only cost a proof, never fake one, except a
row violation within the feasibility tolerance, which the tolerance in the rhs covers).
A solution is only a candidate: ``sat`` requires onnxruntime to confirm it
(``validate_counterexample``); otherwise the disjunct stays ``unknown``. Minimising t (down to
``-cap``) pushes candidates inside the unsafe set, away from the boundary where float32 and
strict inequalities could reject them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from bounds.engine.deadline import DeadlineExceeded, engine_deadline
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from verifier.milp.backends import SolveResult, solve
from verifier.milp.encode import Encoding, MilpUnsupportedError, check_supported, encode
from verifier.milp.model import INF, Expr
from verifier.onnx_import.loader import ImportedModel
from verifier.result import Counterexample
from verifier.spec.types import InputRegion, Spec

log = logging.getLogger(__name__)

ABS_TOL = 1e-6
# A solve starts only with this much time left beyond the longest stretch a previous solve of
# the region spent before its solver's clock checks began (model building, presolve: 0.4 s on
# ERAN 9x200's MILP, where a solve started with less time left overran the stage's deadline).
MIN_SOLVE_S = 0.2
REL_TOL = 1e-6
CAP_REL = 1e-3


@dataclass(frozen=True)
class MilpOptions:
    backend: str = "auto"
    float_errors: bool = True  # encode float32 rounding (off only for exact-arithmetic tests)
    use_crown: bool = True  # skip disjuncts that the bound pass already refutes
    # Where CROWN leaves a disjunct open, the big-M constants come from alpha-CROWN with 20
    # alpha iterations on every intermediate value: mnistfc 256x2 prop_13_0.03 (61 -> 50
    # binaries, 6 of 9 disjuncts refuted by the bounds) took 3.9 s instead of 46.2 s; ACAS Xu
    # 5_4 prop_3 0.95 s instead of 2.41 s (59 -> 44 binaries, refuted by the bounds).
    alpha_bounds: bool = True


ALPHA_BOUNDS = BoundOptions(method="alpha", intermediate="crown", intermediate_alpha_iterations=20)


def _region_bounds(graph, region: InputRegion, refute: bool, alpha: bool):
    """Intermediate bounds and the per-disjunct refutation mask for one region: CROWN, then,
    with ``alpha`` when CROWN leaves a disjunct open, alpha-CROWN (``ALPHA_BOUNDS``) in its
    place (ACAS Xu prop_3 nets 2_7 and 4_5: CROWN refutes in 0.1 s, the alpha pass would
    cost 0.8 s more)."""
    cond = region.condition
    d, k, n_out = cond.coef.shape
    shape = graph.inputs[0].shape
    lower, upper = region.bound_box()
    lo = torch.as_tensor(lower, dtype=torch.float64).reshape(1, *shape)
    hi = torch.as_tensor(upper, dtype=torch.float64).reshape(1, *shape)
    coef = torch.as_tensor(cond.coef.reshape(1, d * k, n_out), dtype=torch.float64)
    rhs = torch.as_tensor(cond.rhs.reshape(1, d * k), dtype=torch.float64)
    res = bound_spec(graph, Interval(lo, hi), coef, rhs, BoundOptions(method="crown"))
    refuted = (res.lower.reshape(d, k) > 0).any(-1).numpy()
    if alpha and not refuted.all():
        res = bound_spec(graph, Interval(lo, hi), coef, rhs, ALPHA_BOUNDS)
        refuted |= (res.lower.reshape(d, k) > 0).any(-1).numpy()
    if not refute:
        refuted[:] = False
    return res, refuted


def _disjunct_model(enc: Encoding, coef: np.ndarray, rhs: np.ndarray, sound: bool = True):
    """The encoding plus the rows of one disjunct and the objective variable t.

    ``sound``: the rows get the tolerance for the output's rounding and the solver's
    feasibility slack (a proof model); otherwise no tolerance (a search model on an exact
    encoding, whose points are real-arithmetic counterexamples)."""
    keep = np.isfinite(rhs)
    coef, rhs = coef[keep], rhs[keep]
    m = enc.model.copy()
    scale = float(np.max(np.abs(rhs), initial=0.0))
    t = m.add_vars([-CAP_REL * (1.0 + scale)], [0.0], name="t")
    if coef.shape[0]:
        out = enc.output
        tol = 0.0
        if sound:
            tol = ABS_TOL + REL_TOL * np.abs(rhs)
        rows = np.asarray((out.mat.T @ coef.T).T)  # coef @ mat, dense [K, m]
        lhs = Expr(np.concatenate([out.idx, t]),
                   np.hstack([rows, -np.ones((coef.shape[0], 1))]), coef @ out.const)
        m.add_rows(lhs, -INF, rhs + tol)
    m.objective = {int(t[0]): 1.0}
    return m


def _validate(model: ImportedModel, spec: Spec, x: np.ndarray, region: int):
    from verifier.validate import validate_counterexample

    return validate_counterexample(model, spec, x, region=region)


class _Region:
    """One region's encodings and the solves made on them (recorded in ``stats``)."""

    def __init__(self, model, spec, r: int, deadline: float, opts: MilpOptions, stats: dict):
        self.model, self.spec, self.r, self.deadline, self.opts = model, spec, r, deadline, opts
        region = spec.regions[r]
        t0 = time.monotonic()
        with engine_deadline(deadline):
            self.bounds, self.refuted = _region_bounds(model.graph, region, opts.use_crown,
                                                       opts.alpha_bounds)
            t1 = time.monotonic()
            # seconds on conv nets (encode._Pace)
            self.enc = self._encode(opts.float_errors)
        self.fixed_s = 0.0  # the longest part of a solve its clock did not cover so far
        self.exact: Encoding | None = None if opts.float_errors else self.enc
        self.stats = {"bounds_s": round(t1 - t0, 4),
                      "encode_s": round(time.monotonic() - t1, 4), "vars": self.enc.model.n_cols,
                      "rows": self.enc.model.n_rows, "binaries": self.enc.model.n_binaries,
                      "crown_refuted": int(self.refuted.sum()),
                      "disjuncts": int(self.refuted.size), "solves": []}
        stats[f"region_{r}"] = self.stats
        log.info("MILP region %d: %d variables (%d binaries), %d rows; bounds %.2f s, "
                 "encoding %.2f s", r, self.stats["vars"], self.stats["binaries"],
                 self.stats["rows"], self.stats["bounds_s"], self.stats["encode_s"])

    def _encode(self, float_errors: bool, search: bool = False) -> Encoding:
        region = self.spec.regions[self.r]
        return encode(self.model.graph, *region.bound_box(), self.bounds.intermediate,
                      self.bounds.deltas, float_errors, search=search)

    def _solve(self, m, d: int, phase: str):
        t1 = time.monotonic()
        if self.deadline - t1 < MIN_SOLVE_S + self.fixed_s:
            return SolveResult("timeout", note="no time left for a solve")
        out = solve(m, max(self.deadline - t1, 0.01), self.opts.backend)
        self.fixed_s = max(self.fixed_s, out.fixed_s)
        self.stats["solves"].append({"disjunct": d, "phase": phase, "status": out.status,
                                     "backend": out.backend, "nodes": out.nodes,
                                     "s": round(time.monotonic() - t1, 4),
                                     **({"note": out.note} if out.note else {})})
        log.info("MILP region %d disjunct %d (%s): %s after %d nodes, %.2f s", self.r, d, phase,
                 out.status, out.nodes or 0, time.monotonic() - t1)
        return out

    def _try(self, enc: Encoding, m, out):
        """Validate a solution's input; else re-solve the LP with its binaries fixed (exact on
        that activation pattern, so integrality slack cannot fake a point) and validate that."""
        cex = _validate(self.model, self.spec, out.x[enc.inputs], self.r)
        if cex is not None or enc.model.n_binaries == 0:
            return cex
        lp = self._solve(m.with_integers_fixed(out.x), -1, "lp-fixed")
        if lp.x is None or not lp.objective <= 0:
            return None
        return _validate(self.model, self.spec, lp.x[enc.inputs], self.r)

    def disjunct(self, d: int):
        """'unsat' | 'unknown' | 'timeout' for disjunct d, or a validated Counterexample."""
        cond = self.spec.regions[self.r].condition
        m = _disjunct_model(self.enc, cond.coef[d], cond.rhs[d], sound=True)
        out = self._solve(m, d, "proof")
        if out.status == "infeasible":
            return "unsat"
        if out.x is None:
            return "timeout" if out.status == "timeout" else "unknown"
        cex = self._try(self.enc, m, out)
        if cex is not None or self.exact is self.enc:
            return cex or "unknown"
        # The proof model's point may use its rounding slack: search the exact encoding.
        with engine_deadline(self.deadline):
            self.exact = self.exact or self._encode(False, search=True)
        m = _disjunct_model(self.exact, cond.coef[d], cond.rhs[d], sound=False)
        out = self._solve(m, d, "search")
        if out.x is not None:
            cex = self._try(self.exact, m, out)
        if cex is None:
            log.info("region %d disjunct %d: no MILP candidate validated", self.r, d)
        return cex or ("timeout" if out.status == "timeout" else "unknown")

    def run(self):
        verdict = "unsat"
        for d in np.flatnonzero(~self.refuted):
            if time.monotonic() >= self.deadline:
                return "timeout"
            out = self.disjunct(int(d))
            if isinstance(out, Counterexample) or out == "timeout":
                return out
            if out == "unknown":
                verdict = "unknown"
        return verdict


def milp_verify(model: ImportedModel, spec: Spec, deadline: float, backend: str = "auto",
                options: MilpOptions | None = None
                ) -> tuple[str, Counterexample | None, dict]:
    """Decide the property by MILP: ('sat', validated counterexample, stats), ('unsat', None,
    stats), or 'unknown' / 'timeout'. Unsupported ops give 'unknown' with stats['reason']."""
    opts = options or MilpOptions(backend=backend)
    stats: dict = {"backend": opts.backend}
    try:
        check_supported(model.graph)
    except MilpUnsupportedError as exc:
        stats["reason"] = str(exc)
        return "unknown", None, stats
    verdict = "unsat"
    for r in range(len(spec.regions)):
        if time.monotonic() >= deadline:
            return "timeout", None, stats
        try:
            out = _Region(model, spec, r, deadline, opts, stats).run()
        except DeadlineExceeded as exc:  # its bound pass or encoding did not end in time
            stats["reason"] = str(exc)
            return "timeout", None, stats
        except MilpUnsupportedError as exc:  # e.g. too large to encode
            stats["reason"] = str(exc)
            return "unknown", None, stats
        if isinstance(out, Counterexample):
            return "sat", out, stats
        if out == "timeout":
            return "timeout", None, stats
        if out == "unknown":
            verdict = "unknown"
    return verdict, None, stats

