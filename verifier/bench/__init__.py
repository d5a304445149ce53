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

from verifier.bench.runner import BenchOptions, Worker, run_instances, run_task
from verifier.bench.scores import CSV_FIELDS, Outcome, Tally, tally, write_csv
from verifier.bench.suites import (
                                   BenchInputError,
                                   Instance,
                                   effective_timeout,
                                   find_suites,
                                   read_expected,
                                   read_instances,
                                   select,
)

__all__ = ["CSV_FIELDS", "BenchInputError", "BenchOptions", "Instance", "Outcome", "Tally",
           "Worker", "effective_timeout", "find_suites", "read_expected", "read_instances",
           "run_instances", "run_task", "select", "tally", "write_csv"]
