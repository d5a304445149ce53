"""Run a robustness gate: verify every sample's local-robustness property, count, judge.

Outcomes per sample: ``certified`` (verdict ``unsat``), ``falsified`` (``sat``, with a
counterexample that onnxruntime confirmed), ``unknown``, ``timeout`` and ``error`` (an internal
failure on that sample only; bad input stops the whole gate instead).

The gate passes when all of these hold:

* certified accuracy (certified samples / all samples) >= ``min_certified`` (default 1.0);
* the number of *failures* <= ``max_falsified`` (when given), where failures are the falsified
  samples plus, unless ``allow_unknown``, the unknown / timeout / error ones;
* unless ``allow_unknown``, no sample is unknown / timeout / error (they "count against the
  gate": a sample that could not be decided fails it, even with ``min_certified`` below 1).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verifier.config import VerifyConfig
from verifier.errors import NncertError
from verifier.gate.data import DataError, Dataset
from verifier.gate.equivalence import EquivalenceProperty
from verifier.gate.specs import BallOptions, input_box, robustness_vnnlib

log = logging.getLogger(__name__)

OUTCOMES = ("certified", "falsified", "unknown", "timeout", "error")
_BY_VERDICT = {"unsat": "certified", "sat": "falsified", "unknown": "unknown",
               "timeout": "timeout", "error": "error"}


@dataclass(frozen=True)
class Thresholds:
    min_certified: float = 1.0
    max_falsified: int | None = None
    allow_unknown: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_certified <= 1.0:
            raise NncertError(f"--min-certified must be in [0, 1], got {self.min_certified!r}")
        if self.max_falsified is not None and self.max_falsified < 0:
            raise NncertError(f"--max-falsified must be >= 0, got {self.max_falsified!r}")


@dataclass(frozen=True)
class SampleOutcome:
    index: int
    name: str
    label: int
    outcome: str
    time_s: float
    method: str = ""
    message: str = ""
    cex_x: np.ndarray | None = None
    cex_y: np.ndarray | None = None
    cex_ref_y: np.ndarray | None = None  # equivalence gate: the reference's output at cex_x

    @property
    def predicted(self) -> int | None:
        """The class on top at the counterexample (None without one)."""
        return None if self.cex_y is None else int(np.argmax(self.cex_y))


@dataclass
class GateSummary:
    model: str
    data: str
    ball: BallOptions
    thresholds: Thresholds
    samples: list[SampleOutcome] = field(default_factory=list)
    total_time_s: float = 0.0
    equivalence: EquivalenceProperty | None = None  # set by the equivalence gate

    @property
    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(OUTCOMES, 0)
        for s in self.samples:
            c[s.outcome] += 1
        return c

    @property
    def certified_accuracy(self) -> float:
        return self.counts["certified"] / len(self.samples) if self.samples else 0.0

    @property
    def undecided(self) -> int:
        c = self.counts
        return c["unknown"] + c["timeout"] + c["error"]

    def failures(self) -> list[str]:
        """Why the gate fails (empty when it passes)."""
        t, c, why = self.thresholds, self.counts, []
        if self.certified_accuracy < t.min_certified:
            why.append(f"certified accuracy {self.certified_accuracy:.4f} < min-certified "
                       f"{t.min_certified:g}")
        bad = c["falsified"] + (0 if t.allow_unknown else self.undecided)
        if t.max_falsified is not None and bad > t.max_falsified:
            what = "falsified" if t.allow_unknown else "falsified/unknown/timeout/error"
            why.append(f"{bad} {what} samples > max-falsified {t.max_falsified}")
        if not t.allow_unknown and self.undecided:
            why.append(f"{self.undecided} samples undecided (unknown/timeout/error); "
                       "pass --allow-unknown to tolerate them")
        return why

    @property
    def passed(self) -> bool:
        return not self.failures()


ProgressFn = Callable[[int, int, SampleOutcome], None]


def run_gate(model, dataset: Dataset, ball: BallOptions, thresholds: Thresholds,
             config: VerifyConfig, data_label: str = "",
             progress: ProgressFn | None = None) -> GateSummary:
    """Verify every sample of ``dataset`` in-process; returns the summary.

    ``model``: an ONNX path or an already loaded ``ImportedModel``. The differential check
    against onnxruntime (when ``config.check_model``) runs once, on the first sample's ball,
    before (and outside the time budget of) the first verification.
    """
    if isinstance(model, str | Path):
        from verifier.onnx_import.loader import load_model

        model = load_model(model)
    n_out = output_count(model)
    summary = GateSummary(model.path, data_label, ball, thresholds)
    start = time.monotonic()
    if config.check_model:  # once, outside the first sample's time budget
        from verifier.onnx_import.check import differential_check

        lower, upper = input_box(dataset.x[0], ball)
        differential_check(model, _parse(lower, upper, int(dataset.y[0]), n_out, 0),
                           seed=config.seed)
    config = config.model_copy(update={"check_model": False})
    for i in range(len(dataset)):
        outcome = verify_sample(model, dataset, i, ball, n_out, config)
        summary.samples.append(outcome)
        if progress is not None:
            progress(i + 1, len(dataset), outcome)
    summary.total_time_s = time.monotonic() - start
    return summary


def output_count(model) -> int:
    if len(model.graph.inputs) != 1 or len(model.graph.outputs) != 1:
        raise DataError("robustness gates need a model with one input and one output tensor")
    return math.prod(model.graph.outputs[0].shape)


def verify_sample(model, dataset: Dataset, i: int, ball: BallOptions, n_out: int,
                  config: VerifyConfig) -> SampleOutcome:
    """Build sample ``i``'s property, verify it, map the verdict to an outcome."""
    from verifier.pipeline import verify

    label = int(dataset.y[i])
    lower, upper = input_box(dataset.x[i], ball)
    spec = _parse(lower, upper, label, n_out, i)
    t0 = time.monotonic()
    try:
        res = verify(model, spec, config)
    except NncertError:
        raise
    except Exception as exc:  # noqa: BLE001 - one sample's internal failure must not hide others
        log.warning("sample %d: internal error: %s", i, exc, exc_info=True)
        return SampleOutcome(i, dataset.names[i], label, "error", time.monotonic() - t0,
                             message=f"{type(exc).__name__}: {exc}")
    cex = res.counterexample
    return SampleOutcome(
        i, dataset.names[i], label, _BY_VERDICT.get(res.verdict, "error"), res.time_s,
        method=res.method, message=res.message,
        cex_x=None if cex is None else np.asarray(cex.x, dtype=np.float64).reshape(-1),
        cex_y=None if cex is None else np.asarray(cex.y, dtype=np.float64).reshape(-1),
    )


def _parse(lower: np.ndarray, upper: np.ndarray, label: int, n_out: int, i: int):
    from verifier.spec import parse_vnnlib

    return parse_vnnlib(robustness_vnnlib(lower, upper, label, n_out), f"<sample {i}>")


def format_table(summary: GateSummary, max_listed: int = 20) -> str:
    """The human-readable result table printed on stdout."""
    n, c = len(summary.samples), summary.counts
    b = summary.ball
    clip = f", clip {b.clip[0]:g},{b.clip[1]:g}" if b.clip else ""
    eq = summary.equivalence
    versus = "" if eq is None else f" vs reference {eq.reference} ({eq.describe()})"
    lines = [f"nncert gate: {summary.model}{versus}  data {summary.data}  eps {b.eps:g} "
             f"(L-{b.norm}{clip})  {n} samples", "",
             f"  {'outcome':<10} {'count':>6} {'share':>7}"]
    for name in OUTCOMES:
        share = 100.0 * c[name] / n if n else 0.0
        lines.append(f"  {name:<10} {c[name]:>6} {share:>6.1f}%")
    lines += ["", f"certified accuracy: {100 * summary.certified_accuracy:.2f}% "
                  f"({c['certified']}/{n})    total time: {summary.total_time_s:.2f} s"]
    bad = [s for s in summary.samples if s.outcome != "certified"]
    for s in bad[:max_listed]:
        extra = f" (predicted {s.predicted})" if s.predicted is not None else ""
        if s.cex_ref_y is not None:
            extra = (f" (max |model - reference| {np.abs(s.cex_y - s.cex_ref_y).max():.6g}; "
                     f"classes {s.predicted} vs {int(np.argmax(s.cex_ref_y))})")
        lines.append(f"  {s.name}: label {s.label} {s.outcome}{extra} [{s.time_s:.2f} s]")
    if len(bad) > max_listed:
        lines.append(f"  ... and {len(bad) - max_listed} more")
    why = summary.failures()
    lines.append("")
    lines.append("GATE PASSED" if not why else "GATE FAILED: " + "; ".join(why))
    return "\n".join(lines) + "\n"
