"""Benchmark runner: VNN-COMP ``instances.csv`` suites, known answers, scores.

Execution model (chosen for low overhead *and* hard timeouts): instances run in a worker
process that is started once and reused, so torch is imported once per bench rather than once
per instance. The parent waits ``timeout + grace`` seconds for each answer; a worker that
overruns is killed, the instance is recorded as ``timeout``, and a fresh worker takes the next
instance. A worker that dies (crash, out of memory) gives an ``error`` row. ``isolate=True``
uses a fresh worker per instance; ``in_process=True`` runs in the calling process (no hard
timeout; for profiling and debugging). ``jobs > 1`` runs that many workers side by side.

Scoring follows VNN-COMP without time bonuses: +10 for a sat/unsat answer that matches a sat/unsat
expected answer, -150 for one that contradicts it, 0 otherwise (unknown/timeout/error answers,
rows whose expected answer is unknown, instances without an expected answer).
"""

from __future__ import annotations

import csv
import logging
import multiprocessing as mp
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from verifier.config import Device, Method

log = logging.getLogger(__name__)

CORRECT_POINTS, INCORRECT_POINTS = 10, -150
_EXPECTED_ALIASES = {"holds": "unsat", "violated": "sat", "safe": "unsat", "unsafe": "sat"}


class BenchInputError(Exception):
    """A suite cannot be read (missing or malformed instances.csv)."""


@dataclass(frozen=True)
class Instance:
    benchmark: str
    onnx: str  # as written in instances.csv (relative to it)
    vnnlib: str
    onnx_path: Path
    vnnlib_path: Path
    timeout: float
    expected: str = ""  # sat / unsat / unknown / "" (no expected.csv row)


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


@dataclass(frozen=True)
class BenchOptions:
    timeout_cap: float | None = None
    method: Method = "auto"
    device: Device = "auto"
    seed: int = 0
    jobs: int = 1
    isolate: bool = False
    in_process: bool = False
    grace: float = 5.0
    check_model: bool = True
    worker_start_timeout: float = 300.0
    bab: dict = field(default_factory=dict)  # VerifyConfig.bab fields (BabConfig keywords)


# -- discovery ----------------------------------------------------------------------------------
def find_suites(path: str | Path) -> list[Path]:
    """instances.csv files for a csv path, a benchmark folder, or a folder of benchmark folders."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BenchInputError(f"no such file or directory: {path}")
    if (path / "instances.csv").is_file():
        return [path / "instances.csv"]
    suites = sorted(p / "instances.csv" for p in path.iterdir() if (p / "instances.csv").is_file())
    if not suites:
        raise BenchInputError(f"{path} has no instances.csv, nor sub-folders with one")
    return suites


def _key(onnx: str, vnnlib: str) -> tuple[str, str]:
    return os.path.normpath(onnx.strip()), os.path.normpath(vnnlib.strip())


def read_expected(csv_path: Path) -> dict[tuple[str, str], str]:
    """expected.csv beside ``csv_path`` (header onnx,vnnlib,expected,...), or {} when absent."""
    path = csv_path.parent / "expected.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        if not row.get("onnx") or not row.get("vnnlib"):
            continue
        value = (row.get("expected") or "").strip().lower()
        out[_key(row["onnx"], row["vnnlib"])] = _EXPECTED_ALIASES.get(value, value)
    return out


def read_instances(csv_path: Path) -> list[Instance]:
    """Parse a VNN-COMP instances.csv (no header; onnx,vnnlib,timeout relative to the csv)."""
    benchmark = csv_path.parent.name
    expected = read_expected(csv_path)
    instances = []
    try:
        with csv_path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchInputError(f"cannot read {csv_path}: {exc}") from None
    for lineno, row in enumerate(rows, 1):
        if len(row) < 3:
            raise BenchInputError(f"{csv_path}:{lineno}: expected onnx,vnnlib,timeout; got {row}")
        onnx, vnnlib = row[0].strip(), row[1].strip()
        try:
            timeout = float(row[2])
        except ValueError:
            raise BenchInputError(f"{csv_path}:{lineno}: bad timeout {row[2]!r}") from None
        instances.append(Instance(
            benchmark, onnx, vnnlib, csv_path.parent / onnx, csv_path.parent / vnnlib,
            timeout, expected.get(_key(onnx, vnnlib), ""),
        ))
    return instances


def select(instances: Iterable[Instance], pattern: str | None = None,
           limit: int | None = None, sample: int | None = None) -> list[Instance]:
    """Keep instances whose onnx or vnnlib path matches ``pattern`` (re.search); of those,
    ``sample`` spread evenly over each suite (its first, its last and equal steps between:
    every model and property region gets a say, unlike the first N), then the first ``limit``."""
    regex = re.compile(pattern) if pattern else None
    chosen = [i for i in instances
              if regex is None or regex.search(i.onnx) or regex.search(i.vnnlib)]
    if sample is not None:
        suites: dict[str, list[Instance]] = {}
        for i in chosen:
            suites.setdefault(i.benchmark, []).append(i)
        chosen = [i for group in suites.values() for i in _spread(group, sample)]
    return chosen[:limit] if limit is not None else chosen


def _spread(items: list, n: int) -> list:
    """n items at evenly spaced positions (all of them when n >= len)."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return items[:n]
    return [items[round(k * (len(items) - 1) / (n - 1))] for k in range(n)]


def effective_timeout(instance: Instance, cap: float | None) -> float:
    return min(instance.timeout, cap) if cap else instance.timeout


# -- running one instance -----------------------------------------------------------------------
def run_task(task: dict) -> dict:
    """Verify one instance in this process; never raises (errors become ``error`` answers)."""
    start = time.monotonic()
    try:
        from verifier.config import BabConfig, VerifyConfig
        from verifier.pipeline import verify

        if task.get("memory_share"):
            from verifier.memory_guard import cap_process_memory

            cap_process_memory(task["memory_share"])
        config = VerifyConfig(timeout=task["timeout"], method=task["method"],
                              device=task["device"], seed=task["seed"],
                              check_model=task["check_model"],
                              bab=BabConfig(**task.get("bab", {})))
        result = verify(task["onnx"], task["vnnlib"], config)
        return {"result": result.verdict, "time_s": time.monotonic() - start,
                "method": result.method, "message": result.message,
                "first_bound_s": result.stats.get("first_bound_s")}
    except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the bench
        from verifier.cli.common import classify_error

        message, _ = classify_error(exc)
        return {"result": "error", "time_s": time.monotonic() - start, "method": "",
                "message": message}


def _worker_main(conn) -> None:
    """Worker loop: import the pipeline once, then answer tasks until told to stop."""
    import verifier.pipeline  # noqa: F401  (pay the torch import before the first clock starts)

    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(run_task(task))


class Worker:
    """A reusable process with a hard per-task deadline. ``target(conn)`` runs in the child:
    it sends ``"ready"`` once started, then answers each task it receives until it gets None
    (default: verification tasks, ``run_task``; the fuzz campaigns pass their own)."""

    def __init__(self, start_timeout: float, target: Callable = _worker_main):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(start_timeout) or self.conn.recv() != "ready":
            self.kill()
            raise RuntimeError("benchmark worker did not start")

    def run(self, task, hard_limit: float) -> dict | None:
        """The answer, or None when the worker overran ``hard_limit`` (it is then killed)."""
        try:
            self.conn.send(task)
            if self.conn.poll(hard_limit):
                return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(1)
            code = self.proc.exitcode
            self.kill()
            return self.died(code)
        self.kill()
        return None

    def died(self, code: int | None) -> dict:
        """The answer for a task whose process died (crash, out of memory)."""
        return {"result": "error", "time_s": 0.0, "method": "",
                "message": f"worker process died (exit code {code})"}

    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(5)
        except (OSError, BrokenPipeError):
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def _task(instance: Instance, opts: BenchOptions) -> dict:
    return {"onnx": str(instance.onnx_path), "vnnlib": str(instance.vnnlib_path),
            "timeout": effective_timeout(instance, opts.timeout_cap), "method": opts.method,
            "device": opts.device, "seed": opts.seed, "check_model": opts.check_model,
            "bab": dict(opts.bab), "memory_share": _memory_share(opts)}


def _memory_share(opts: BenchOptions) -> float | None:
    """Share of the available memory each worker may use (None in-process: the calling
    process is not capped). Workers side by side split PROCESS_MEMORY_SHARE, so that together
    they stay under it and a model too large answers ``unknown`` instead of being killed."""
    if opts.in_process:
        return None
    from verifier.memory_guard import PROCESS_MEMORY_SHARE

    return PROCESS_MEMORY_SHARE / max(1, opts.jobs)


def _outcome(instance: Instance, answer: dict, timeout: float, wall_s: float,
             killed: bool = False) -> Outcome:
    """The row for ``answer``; ``wall_s`` is the parent's own measure of the instance's run."""
    first = answer.get("first_bound_s")
    return Outcome(instance, answer["result"], float(answer["time_s"]), timeout,
                   answer.get("method", ""), answer.get("message", ""),
                   overrun_s=max(0.0, wall_s - timeout), killed=killed,
                   first_bound_s=None if first is None else float(first))


def _run_serial(items: list[tuple[int, Instance]], opts: BenchOptions,
                done: Callable[[int, Outcome], None]) -> None:
    worker: Worker | None = None
    try:
        for index, instance in items:
            task = _task(instance, opts)
            if opts.in_process:
                start = time.monotonic()
                answer = run_task(task)
                done(index, _outcome(instance, answer, task["timeout"],
                                     time.monotonic() - start))
                continue
            if worker is None or not worker.alive():
                worker = Worker(opts.worker_start_timeout)
            start = time.monotonic()
            answer = worker.run(task, task["timeout"] + opts.grace)
            wall = time.monotonic() - start
            killed = answer is None
            if killed:
                log.warning("%s %s: worker killed %.1f s after its %g s timeout",
                            instance.onnx, instance.vnnlib, wall - task["timeout"],
                            task["timeout"])
                answer = {"result": "timeout", "time_s": wall,
                          "message": f"killed after overrunning its timeout by {opts.grace:g} s"}
            if killed or opts.isolate or not worker.alive():
                worker.close()
                worker = None
            done(index, _outcome(instance, answer, task["timeout"], wall, killed))
    finally:
        if worker is not None:
            worker.close()


def run_instances(instances: list[Instance], opts: BenchOptions,
                  on_result: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run every instance; outcomes come back in input order. ``on_result`` sees each one."""
    outcomes: list[Outcome | None] = [None] * len(instances)
    lock = threading.Lock()

    def done(index: int, outcome: Outcome) -> None:
        with lock:
            outcomes[index] = outcome
            if on_result is not None:
                on_result(outcome)

    items = list(enumerate(instances))
    jobs = max(1, min(opts.jobs, len(items)))
    if jobs == 1 or opts.in_process:
        _run_serial(items, opts, done)
    else:
        pending: queue.Queue = queue.Queue()
        for item in items:
            pending.put(item)

        def drain() -> None:
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                _run_serial([item], opts, done)

        threads = [threading.Thread(target=drain, daemon=True) for _ in range(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [o for o in outcomes if o is not None]


# -- summaries ----------------------------------------------------------------------------------
@dataclass
class Tally:
    instances: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    incorrect: int = 0
    times: list[float] = field(default_factory=list)
    score: int = 0
    killed: int = 0
    max_overrun_s: float = 0.0
    bound_passes: int = 0  # instances whose verification completed a bound pass
    max_first_bound_s: float = 0.0  # the slowest first complete bound pass among them

    def add(self, outcome: Outcome) -> None:
        self.instances += 1
        if outcome.first_bound_s is not None:
            self.bound_passes += 1
            self.max_first_bound_s = max(self.max_first_bound_s, outcome.first_bound_s)
        self.killed += outcome.killed
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
              "timeout_s", "overrun_s", "killed", "first_bound_s", "method", "message")


def write_csv(path: str | Path, outcomes: Iterable[Outcome]) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for o in outcomes:
            i = o.instance
            writer.writerow([i.benchmark, i.onnx, i.vnnlib, o.result, f"{o.time_s:.3f}",
                             i.expected, o.correct, f"{o.timeout_s:g}", f"{o.overrun_s:.3f}",
                             "yes" if o.killed else "",
                             "" if o.first_bound_s is None else f"{o.first_bound_s:.3f}",
                             o.method, o.message])
