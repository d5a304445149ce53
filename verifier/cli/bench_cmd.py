"""``nncert bench``: run VNN-COMP suites, compare with expected.csv, print a table and a summary.

stdout: the per-benchmark table, then exactly one line
``summary: instances=N unsat=U sat=S unknown=K timeout=T error=E incorrect=I time_s=X score=Z
killed=W max_overrun_s=O`` (workers killed for overrunning timeout + grace; the largest wall
time past an instance's timeout, as the parent measured it).
stderr: progress (a bar on a terminal, one line per instance otherwise) and logs.
Exit status 1 when any answer contradicts expected.csv, 2 when the suite cannot be read.
"""

from __future__ import annotations

import logging
import re
import sys
import time

from verifier.cli.common import (
    EXIT_INCORRECT,
    EXIT_OK,
    UsageError,
    add_bab_arguments,
    bab_settings,
    positive_float,
)
from verifier.config import DEVICES, METHODS

VERDICT_COLUMNS = ("unsat", "sat", "unknown", "timeout", "error")


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "bench", parents=[common], help="run VNN-COMP instances.csv suites",
        description="Run every instance of one or more VNN-COMP suites (a csv, a benchmark "
                    "folder, or a folder of benchmark folders) and score the answers.",
    )
    p.add_argument("suite", metavar="DIR_OR_INSTANCES_CSV")
    p.add_argument("--timeout-cap", type=positive_float, metavar="S",
                   help="per-instance timeout = min(instance timeout, S)")
    p.add_argument("--out", metavar="results.csv", help="write per-instance rows to this csv")
    p.add_argument("--filter", metavar="REGEX",
                   help="keep instances whose onnx or vnnlib path matches (re.search)")
    p.add_argument("--limit", type=int, metavar="N", help="keep the first N instances")
    p.add_argument("--sample", type=int, metavar="N",
                   help="keep N instances per suite, evenly spread over its instances.csv")
    p.add_argument("--method", choices=METHODS,
                   default="auto")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel workers")
    p.add_argument("--isolate", action="store_true",
                   help="a fresh worker process per instance (default: one reused worker)")
    p.add_argument("--in-process", action="store_true",
                   help="run in this process (no hard timeout; for profiling)")
    p.add_argument("--grace", type=positive_float, default=5.0, metavar="S",
                   help="kill a worker this long after an instance's timeout (default 5)")
    add_bab_arguments(p)
    p.add_argument("--no-model-check", action="store_true",
                   help="skip the differential check of each model against onnxruntime")
    p.set_defaults(run=run)


class Progress:
    """A dependency-free progress display on stderr."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, outcome) -> None:
        self.done += 1
        name = f"{outcome.instance.benchmark}/{outcome.instance.onnx} {outcome.instance.vnnlib}"
        status = f"{outcome.result} {outcome.time_s:.1f}s"
        if outcome.overrun_s > 0:
            status += f" (over by {outcome.overrun_s:.1f}s{', killed' if outcome.killed else ''})"
        if outcome.abandoned:
            status += f" (a stage overran: {outcome.abandoned})"
        if outcome.correct == "no":
            status += f" INCORRECT (expected {outcome.instance.expected})"
        if outcome.result == "error" and outcome.message:
            status += f": {outcome.message[:200]}"
        if self.tty:
            width = 30
            filled = width * self.done // max(1, self.total)
            bar = "#" * filled + "-" * (width - filled)
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\r\x1b[K[{bar}] {self.done}/{self.total} {elapsed:.0f}s "
                             f"{status[:60]}")
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"[{self.done}/{self.total}] {name}: {status}\n")
        sys.stderr.flush()


def format_table(per: dict, total) -> str:
    """A fixed-width per-benchmark table with a total row."""
    head = ("benchmark", "instances", *VERDICT_COLUMNS, "incorrect", "time_s", "median_s",
            "score", "killed", "max_overrun_s", "abandoned", "bounded", "max_first_bound_s")
    rows = []
    for name, t in [*per.items(), ("TOTAL", total)]:
        rows.append((name, str(t.instances), *(str(t.count(v)) for v in VERDICT_COLUMNS),
                     str(t.incorrect), f"{t.total_time:.1f}", f"{t.median_time:.2f}",
                     str(t.score), str(t.killed), f"{t.max_overrun_s:.2f}", str(t.abandoned),
                     str(t.bound_passes), f"{t.max_first_bound_s:.2f}"))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells)

    return "\n".join([fmt(head), *(fmt(r) for r in rows)])


def summary_line(total) -> str:
    counts = " ".join(f"{v}={total.count(v)}" for v in VERDICT_COLUMNS)
    return (f"summary: instances={total.instances} {counts} incorrect={total.incorrect} "
            f"time_s={total.total_time:.1f} score={total.score} killed={total.killed} "
            f"max_overrun_s={total.max_overrun_s:.2f} abandoned={total.abandoned} "
            f"bounded={total.bound_passes} "
            f"max_first_bound_s={total.max_first_bound_s:.2f}")


def run(args) -> int:
    from verifier import bench

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    if args.sample is not None and args.sample < 1:
        raise UsageError("--sample must be >= 1")
    if args.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    try:
        if args.filter:
            re.compile(args.filter)
        instances = [i for csv_path in bench.find_suites(args.suite)
                     for i in bench.read_instances(csv_path)]
    except bench.BenchInputError as exc:
        raise UsageError(str(exc)) from None
    except re.error as exc:
        raise UsageError(f"bad --filter regex {args.filter!r}: {exc}") from None
    instances = bench.select(instances, args.filter, args.limit, args.sample)
    opts = bench.BenchOptions(
        timeout_cap=args.timeout_cap, method=args.method, device=args.device, seed=args.seed,
        jobs=args.jobs, isolate=args.isolate, in_process=args.in_process, grace=args.grace,
        check_model=not args.no_model_check, bab=bab_settings(args),
        log_level=logging.getLogger().level,
    )
    progress = Progress(len(instances))
    outcomes = bench.run_instances(instances, opts, on_result=progress.update)
    if args.out:
        bench.write_csv(args.out, outcomes)
    per, total = bench.tally(outcomes)
    print(format_table(per, total))
    print(summary_line(total))
    sys.stdout.flush()
    return EXIT_INCORRECT if total.incorrect else EXIT_OK
