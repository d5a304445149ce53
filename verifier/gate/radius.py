"""Certified radius per sample: bisection between a proved radius and a falsified one.

For each sample the search keeps two numbers:

* ``certified_eps``: the largest radius at which :func:`verifier.verify` answered ``unsat``;
  a proof at ``eps`` holds at every smaller radius (the balls are nested), so every radius
  below it is robust too. ``None`` when no positive radius was proved.
* ``falsified_eps``: the smallest radius at which a counterexample exists that onnxruntime
  confirmed. A counterexample at distance ``d`` from the sample (L-inf) is one at every
  radius ``>= d``, so the search records ``d`` (after re-validating the counterexample in the
  ball of radius ``d``), not the radius it was searching at. ``0`` when the sample itself is
  misclassified; ``None`` when no counterexample was found up to ``max_eps``.

Search: check the sample itself (onnxruntime), then ``max_eps``; phase 1 bisects for the
largest proved radius (the configured method; ``auto`` on an input too large for input
splitting runs as ``incomplete``: a short attack, then CROWN / alpha-CROWN), phase 2 bisects
between the largest undecided radius and the smallest falsified one with attacks only, for a
smaller counterexample radius. Before each verification the best counterexample so far is
pulled into the smaller ball (projected and scaled towards the sample) and re-checked with
onnxruntime: when that still violates, the radius is falsified without running the verifier.
An ``unknown`` or ``timeout`` at ``mid`` lowers the ceiling for the proof search.

Each verification gets ``min(time left for the sample, call_timeout)`` seconds.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verifier.config import VerifyConfig
from verifier.errors import NncertError
from verifier.gate.data import Dataset
from verifier.gate.specs import BallOptions, input_box, robustness_vnnlib
from verifier.result import Counterexample

log = logging.getLogger(__name__)

STATUSES = ("misclassified", "robust", "bracketed", "open", "timeout")
CSV_HEADER = ("sample", "label", "certified_eps", "falsified_eps", "status", "time_s")


@dataclass(frozen=True)
class RadiusOptions:
    """Search range and budgets: radii in ``[0, max_eps]``, stop when the bracket is <= tol."""

    max_eps: float = 0.1
    tol: float = 1e-3
    timeout_per_sample: float = 60.0
    call_timeout: float | None = None  # default: timeout_per_sample / 4
    clip: tuple[float, float] | None = None
    norm: str = "inf"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_eps) and self.max_eps > 0):
            raise NncertError(f"--max-eps must be a finite number > 0, got {self.max_eps!r}")
        if not (math.isfinite(self.tol) and self.tol > 0):
            raise NncertError(f"--tol must be a finite number > 0, got {self.tol!r}")
        BallOptions(self.max_eps, self.norm, self.clip)  # validates norm and clip

    def ball(self, eps: float) -> BallOptions:
        return BallOptions(eps, self.norm, self.clip)

    @property
    def per_call(self) -> float:
        return self.call_timeout or self.timeout_per_sample / 4


@dataclass
class RadiusResult:
    """The bracket found for one sample, and the verifications that produced it."""

    index: int
    name: str
    label: int
    certified_eps: float | None = None
    falsified_eps: float | None = None
    status: str = "open"
    time_s: float = 0.0
    cex: Counterexample | None = None  # validated at radius falsified_eps
    calls: list[tuple[float, str]] = field(default_factory=list)  # (eps, verdict) in order


def ball_spec(x: np.ndarray, label: int, n_out: int, ball: BallOptions, name: str = ""):
    """The parsed robustness :class:`~verifier.spec.types.Spec` of one sample's ball."""
    from verifier.spec import parse_vnnlib

    lower, upper = input_box(x, ball)
    return parse_vnnlib(robustness_vnnlib(lower, upper, label, n_out),
                        f"<{name} eps {ball.eps!r}>")


class _Sample:
    """Search state for one sample."""

    def __init__(self, model, x: np.ndarray, label: int, n_out: int, opts: RadiusOptions,
                 config: VerifyConfig, result: RadiusResult) -> None:
        self.model, self.x, self.label, self.n_out = model, x, label, n_out
        self.flat = np.asarray(x, dtype=np.float64).reshape(-1)
        self.opts, self.config, self.res = opts, config, result
        self.deadline = time.monotonic() + opts.timeout_per_sample

    def spec(self, eps: float):
        return ball_spec(self.x, self.label, self.n_out, self.opts.ball(eps), self.res.name)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, cand: np.ndarray, eps: float) -> Counterexample | None:
        """``cand`` re-checked (onnxruntime) as a counterexample in the ball of radius eps."""
        from verifier.validate import validate_counterexample

        return validate_counterexample(self.model, self.spec(eps), cand)

    def record_cex(self, cex: Counterexample, eps: float) -> None:
        """Keep ``cex`` when it falsifies a smaller radius than the best so far: at its own
        L-inf distance from the sample when it validates there, else at ``eps``."""
        dist = float(np.max(np.abs(cex.x - self.flat))) if cex.x.size else 0.0
        best = (eps, cex)
        for d in (dist, dist * (1 + 1e-9) + 1e-12):
            if d < eps:
                found = self.check(cex.x, d)
                if found is not None:
                    best = (d, found)
                    break
        if self.res.falsified_eps is None or best[0] < self.res.falsified_eps:
            self.res.falsified_eps, self.res.cex = best

    def warm_start(self, eps: float) -> Counterexample | None:
        """The best counterexample so far pulled into the ball of radius eps (clipped towards
        the sample, then scaled towards it), if onnxruntime still confirms one."""
        if self.res.cex is None or self.res.falsified_eps in (None, 0.0):
            return None
        delta = self.res.cex.x - self.flat
        lo, hi = self.opts.clip if self.opts.clip else (-np.inf, np.inf)
        for cand in (self.flat + np.clip(delta, -eps, eps),
                     self.flat + delta * (eps / self.res.falsified_eps)):
            found = self.check(np.clip(cand, lo, hi), eps)
            if found is not None:
                return found
        return None

    def verify_at(self, eps: float, method: str) -> str:
        """``sat``/``unsat``/``unknown``/``timeout`` at radius eps, updating the bracket."""
        from verifier.pipeline import verify

        cex = self.warm_start(eps)
        if cex is not None:
            self.res.calls.append((eps, "sat (reused)"))
            self.record_cex(cex, eps)
            return "sat"
        budget = min(self.left(), self.opts.per_call)
        if budget <= 0.05:
            return "timeout"
        config = self.config.model_copy(update={"timeout": budget, "method": method})
        res = verify(self.model, self.spec(eps), config)
        self.res.calls.append((eps, res.verdict))
        log.info("%s eps %g: %s (%s, %.2f s)", self.res.name, eps, res.verdict, res.method,
                 res.time_s)
        if res.verdict == "unsat":
            if self.res.certified_eps is None or eps > self.res.certified_eps:
                self.res.certified_eps = eps
        elif res.verdict == "sat" and res.counterexample is not None:
            self.record_cex(res.counterexample, eps)
        elif res.verdict == "error":
            raise RuntimeError(f"verification error at eps {eps!r}: {res.message}")
        return res.verdict

    def misclassified(self) -> bool:
        """True (and falsified at 0) when the sample itself is not classified as its label."""
        cex = self.check(self.flat, 0.0)
        if cex is None:
            return False
        self.res.falsified_eps, self.res.cex = 0.0, cex
        return True

    def search(self) -> str:
        """Run both phases; the final status."""
        if self.misclassified():
            return "misclassified"
        if self.verify_at(self.opts.max_eps, self.proof_method()) == "unsat":
            return "robust"
        undecided = self.prove()
        if undecided is not None:
            self.falsify(undecided)
        if self.closed():
            return "bracketed"
        return "timeout" if self.left() <= 0.05 else "open"

    def closed(self) -> bool:
        f = self.res.falsified_eps
        return f is not None and f - (self.res.certified_eps or 0.0) <= self.opts.tol

    def proof_method(self) -> str:
        """The configured method; ``auto`` on a large input becomes ``incomplete``, whose
        only difference is the long attack that :meth:`falsify` runs more cheaply."""
        from verifier.strategy import INPUT_SPLIT_MAX_INPUTS

        if self.config.method == "auto" and self.flat.size > INPUT_SPLIT_MAX_INPUTS:
            return "incomplete"
        return self.config.method

    def prove(self) -> float | None:
        """Phase 1: bisect for the largest proved radius. Returns the largest radius left
        undecided (unknown/timeout), None when every answer was sat or unsat."""
        lo, undecided, method = 0.0, None, self.proof_method()
        ceil = self.res.falsified_eps if self.res.falsified_eps is not None else self.opts.max_eps
        if self.res.falsified_eps is None:
            undecided = self.opts.max_eps
        while ceil - lo > self.opts.tol and self.left() > 0.05:
            mid = 0.5 * (lo + ceil)
            verdict = self.verify_at(mid, method)
            if verdict == "unsat":
                lo = mid
            elif verdict == "sat":
                ceil = min(ceil, self.res.falsified_eps)
            else:  # undecided: look for a proof below it
                ceil = mid
                undecided = mid if undecided is None else max(undecided, mid)
        return undecided

    def falsify(self, undecided: float) -> None:
        """Phase 2: bisect between the largest undecided radius and the smallest falsified
        one (or max_eps) with attacks only, for a smaller counterexample radius."""
        lo = undecided
        hi = self.res.falsified_eps if self.res.falsified_eps is not None else self.opts.max_eps
        if self.res.falsified_eps is None and self.left() > 0.05:
            self.verify_at(hi, "attack")
            if self.res.falsified_eps is None:
                return
            hi = self.res.falsified_eps
        while hi - lo > self.opts.tol and self.left() > 0.05:
            mid = 0.5 * (lo + hi)
            if self.verify_at(mid, "attack") == "sat":
                hi = min(hi, self.res.falsified_eps)
            else:
                lo = mid


def radius_of_sample(model, dataset: Dataset, i: int, n_out: int, opts: RadiusOptions,
                     config: VerifyConfig) -> RadiusResult:
    """The certified / falsified bracket for sample ``i``."""
    res = RadiusResult(i, dataset.names[i], int(dataset.y[i]))
    t0 = time.monotonic()
    state = _Sample(model, dataset.x[i], res.label, n_out, opts, config, res)
    res.status = state.search()
    res.time_s = time.monotonic() - t0
    return res


ProgressFn = Callable[[int, int, RadiusResult], None]


def run_radius(model, dataset: Dataset, opts: RadiusOptions, config: VerifyConfig,
               progress: ProgressFn | None = None) -> list[RadiusResult]:
    """Bracket the robustness radius of every sample (model: ONNX path or ImportedModel)."""
    from verifier.gate.gate import output_count

    if isinstance(model, str | Path):
        from verifier.onnx_import.loader import load_model

        model = load_model(model)
    n_out = output_count(model)
    if config.check_model:
        from verifier.onnx_import.check import differential_check

        spec = ball_spec(dataset.x[0], int(dataset.y[0]), n_out, opts.ball(opts.max_eps))
        differential_check(model, spec, seed=config.seed)
    config = config.model_copy(update={"check_model": False})
    results = []
    for i in range(len(dataset)):
        results.append(radius_of_sample(model, dataset, i, n_out, opts, config))
        if progress is not None:
            progress(i + 1, len(dataset), results[-1])
    return results


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def write_csv(results: list[RadiusResult], path: str | Path) -> None:
    """One row per sample: sample, label, certified_eps, falsified_eps, status, time_s
    (an empty radius cell: none proved / none found)."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for r in results:
            w.writerow([r.name, r.label, _num(r.certified_eps), _num(r.falsified_eps), r.status,
                        f"{r.time_s:.3f}"])


def radius_dict(r: RadiusResult) -> dict:
    """One sample's result for JSON: the bracket, the calls and the counterexample (validated
    at ``falsified_eps``)."""
    d = {"index": r.index, "sample": r.name, "label": r.label,
         "certified_eps": r.certified_eps, "falsified_eps": r.falsified_eps,
         "status": r.status, "time_s": round(r.time_s, 6),
         "calls": [{"eps": e, "verdict": v} for e, v in r.calls]}
    if r.cex is not None:
        d["counterexample"] = {"x": r.cex.x.tolist(), "y": r.cex.y.tolist()}
    return d


def write_json(results: list[RadiusResult], opts: RadiusOptions, path: str | Path) -> None:
    """The options and every sample's :func:`radius_dict`."""
    import json

    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    body = {"tool": "nncert", "norm": opts.norm, "max_eps": opts.max_eps, "tol": opts.tol,
            "clip": list(opts.clip) if opts.clip else None,
            "samples": [radius_dict(r) for r in results]}
    path.write_text(json.dumps(body, indent=2) + "\n")


def read_csv(path: str | Path) -> list[RadiusResult]:
    """Rows written by :func:`write_csv` (without counterexamples or call logs)."""
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            out.append(RadiusResult(
                i, row["sample"], int(row["label"]),
                float(row["certified_eps"]) if row["certified_eps"] else None,
                float(row["falsified_eps"]) if row["falsified_eps"] else None,
                row["status"], float(row["time_s"])))
    return out


def format_radius_table(results: list[RadiusResult], opts: RadiusOptions) -> str:
    """The human-readable table printed on stdout."""
    lines = [f"nncert radius: L-{opts.norm} radii in [0, {opts.max_eps:g}], tol {opts.tol:g}",
             "", f"  {'sample':<16} {'label':>5} {'certified':>10} {'falsified':>10} "
                 f"{'status':<13} {'time':>7}"]
    for r in results:
        c = "-" if r.certified_eps is None else f"{r.certified_eps:.5g}"
        f = "-" if r.falsified_eps is None else f"{r.falsified_eps:.5g}"
        lines.append(f"  {r.name:<16} {r.label:>5} {c:>10} {f:>10} {r.status:<13} "
                     f"{r.time_s:>6.2f}s")
    certs = [r.certified_eps or 0.0 for r in results]
    lines += ["", f"median certified radius: {float(np.median(certs)):.5g}    "
                  f"total time: {sum(r.time_s for r in results):.2f} s"]
    return "\n".join(lines) + "\n"
