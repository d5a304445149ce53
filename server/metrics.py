"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Gauges that describe the store (jobs by status, queue length) are read from SQLite at scrape
time, so they are right after a restart. Counters and the job-duration histogram live in this
process and start from zero with it, as Prometheus counters do.
"""

from __future__ import annotations

import math
import threading
from collections import Counter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Job wall-clock durations in seconds: sub-second answers up to the one-hour timeout cap.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
                    3600.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Histogram:
    """A cumulative histogram with fixed upper bounds, one series per label value."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS):
        self.buckets = buckets
        self.counts: dict[str, list[int]] = {}
        self.sums: Counter[str] = Counter()

    def observe(self, label: str, value: float) -> None:
        counts = self.counts.setdefault(label, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[label] += value

    def lines(self, name: str, label_name: str) -> list[str]:
        out = []
        for label in sorted(self.counts):
            counts, tag = self.counts[label], f'{label_name}="{_label(label)}"'
            for bound, n in zip(self.buckets, counts, strict=False):
                out.append(f'{name}_bucket{{{tag},le="{_number(bound)}"}} {n}')
            out.append(f'{name}_bucket{{{tag},le="+Inf"}} {counts[-1]}')
            out.append(f"{name}_sum{{{tag}}} {_number(self.sums[label])}")
            out.append(f"{name}_count{{{tag}}} {counts[-1]}")
        return out


class Metrics:
    """Process-local counters and histograms; thread-safe (dispatcher and request threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.durations = Histogram()
        self.finished: Counter[str] = Counter()
        self.submitted = 0
        self.rate_limited = 0

    def job_finished(self, outcome: str, seconds: float | None) -> None:
        """A job ended with ``outcome`` (its verdict, or ``failed``)."""
        with self._lock:
            self.finished[outcome] += 1
            if seconds is not None and math.isfinite(seconds) and seconds >= 0:
                self.durations.observe(outcome, seconds)

    def job_submitted(self, n: int = 1) -> None:
        with self._lock:
            self.submitted += n

    def request_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def render(self, by_status: dict[str, int], workers_alive: int, workers: int) -> str:
        """The exposition text, with the store's job counts and the pool's size."""
        from server.store import STATUSES

        lines = ["# HELP nncert_jobs Jobs in the store by status.", "# TYPE nncert_jobs gauge"]
        lines += [f'nncert_jobs{{status="{s}"}} {by_status.get(s, 0)}' for s in STATUSES]
        lines += ["# HELP nncert_queue_length Jobs waiting for a worker.",
                  "# TYPE nncert_queue_length gauge",
                  f"nncert_queue_length {by_status.get('queued', 0)}",
                  "# HELP nncert_workers Worker processes configured and alive.",
                  "# TYPE nncert_workers gauge",
                  f'nncert_workers{{state="configured"}} {workers}',
                  f'nncert_workers{{state="alive"}} {workers_alive}']
        with self._lock:
            lines += ["# HELP nncert_jobs_submitted_total Jobs accepted by this process.",
                      "# TYPE nncert_jobs_submitted_total counter",
                      f"nncert_jobs_submitted_total {self.submitted}",
                      "# HELP nncert_jobs_finished_total Jobs finished by this process, "
                      "by outcome.",
                      "# TYPE nncert_jobs_finished_total counter"]
            lines += [f'nncert_jobs_finished_total{{outcome="{_label(k)}"}} {v}'
                      for k, v in sorted(self.finished.items())]
            lines += ["# HELP nncert_job_duration_seconds Wall-clock time of finished jobs.",
                      "# TYPE nncert_job_duration_seconds histogram"]
            lines += self.durations.lines("nncert_job_duration_seconds", "outcome")
            lines += ["# HELP nncert_rate_limited_total Requests answered 429.",
                      "# TYPE nncert_rate_limited_total counter",
                      f"nncert_rate_limited_total {self.rate_limited}"]
        return "\n".join(lines) + "\n"
