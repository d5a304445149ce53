"""Scores of bench runs (VNN-COMP points without time bonuses): per-instance outcomes, per
benchmark tallies and the results csv."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from verifier.bench.suites import Instance

CORRECT_POINTS, INCORRECT_POINTS = 10, -150


@dataclass
class Outcome:
    instance: Instance
    result: str
    time_s: float
    timeout_s: float
    method: str = ""
    message: str = ""
    # Wall time the parent measured beyond ``timeout_s`` (0 when on time), and whether the
    # worker had to be killed for overrunning it by the grace period.
    overrun_s: float = 0.0
    killed: bool = False
    # Seconds from the start of verification to the end of its first complete bound pass
    # (None: no bound pass ended: settled by an attack first, or none fit before the deadline).
    first_bound_s: float | None = None
    # Where a stage was still running when the watchdog answered at the timeout (a stage
    # overran its deadline; "" when none did: verifier.watchdog).
    abandoned: str = ""

    @property
    def correct(self) -> str:
        """"yes"/"no" when a definite answer meets a definite expected answer, else ""."""
        exp = self.instance.expected
        if self.result in ("sat", "unsat") and exp in ("sat", "unsat"):
            return "yes" if self.result == exp else "no"
        return ""

    @property
    def points(self) -> int:
        return {"yes": CORRECT_POINTS, "no": INCORRECT_POINTS}.get(self.correct, 0)




@dataclass
class Tally:
    instances: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    incorrect: int = 0
    times: list[float] = field(default_factory=list)
    score: int = 0
    killed: int = 0
    max_overrun_s: float = 0.0
    abandoned: int = 0  # answered on time by the watchdog, a stage still running
    bound_passes: int = 0  # instances whose verification completed a bound pass
    max_first_bound_s: float = 0.0  # the slowest first complete bound pass among them

    def add(self, outcome: Outcome) -> None:
        self.instances += 1
        if outcome.first_bound_s is not None:
            self.bound_passes += 1
            self.max_first_bound_s = max(self.max_first_bound_s, outcome.first_bound_s)
        self.killed += outcome.killed
        self.abandoned += bool(outcome.abandoned)
        self.max_overrun_s = max(self.max_overrun_s, outcome.overrun_s)
        self.counts[outcome.result] = self.counts.get(outcome.result, 0) + 1
        self.incorrect += outcome.correct == "no"
        self.times.append(outcome.time_s)
        self.score += outcome.points

    def count(self, verdict: str) -> int:
        return self.counts.get(verdict, 0)

    @property
    def total_time(self) -> float:
        return sum(self.times)

    @property
    def median_time(self) -> float:
        times = sorted(self.times)
        if not times:
            return 0.0
        mid = len(times) // 2
        return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2


def tally(outcomes: Iterable[Outcome]) -> tuple[dict[str, Tally], Tally]:
    """Per-benchmark tallies (in first-seen order) and the overall tally."""
    per: dict[str, Tally] = {}
    total = Tally()
    for o in outcomes:
        per.setdefault(o.instance.benchmark, Tally()).add(o)
        total.add(o)
    return per, total


CSV_FIELDS = ("benchmark", "onnx", "vnnlib", "result", "time_s", "expected", "correct",
              "timeout_s", "overrun_s", "killed", "abandoned", "first_bound_s", "method",
              "message")


def write_csv(path: str | Path, outcomes: Iterable[Outcome]) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for o in outcomes:
            i = o.instance
            writer.writerow([i.benchmark, i.onnx, i.vnnlib, o.result, f"{o.time_s:.3f}",
                             i.expected, o.correct, f"{o.timeout_s:g}", f"{o.overrun_s:.3f}",
                             "yes" if o.killed else "", o.abandoned,
                             "" if o.first_bound_s is None else f"{o.first_bound_s:.3f}",
                             o.method, o.message])
