"""Running instances: a reusable worker process with a hard per-instance deadline (see the
package docstring for the execution model)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from verifier.bench.scores import Outcome
from verifier.bench.suites import Instance, effective_timeout

if TYPE_CHECKING:
    from verifier.config import Device, Method

log = logging.getLogger(__name__)


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
    # Workers log at this level to stderr (bench -v: each instance's stages, with times).
    log_level: int = logging.WARNING
    bab: dict = field(default_factory=dict)  # VerifyConfig.bab fields (BabConfig keywords)


def run_task(task: dict) -> dict:
    """Verify one instance in this process; never raises (errors become ``error`` answers)."""
    start = time.monotonic()
    try:
        from verifier.config import BabConfig, VerifyConfig
        from verifier.pipeline import verify

        if task.get("memory_share"):
            from bounds.engine.budget import set_device_share
            from verifier.memory_guard import guard_process_memory

            guard_process_memory(task["memory_share"])
            set_device_share(task["memory_share"])  # (a GPU's memory splits the same way)
        if task.get("threads"):
            import torch

            torch.set_num_threads(task["threads"])
        config = VerifyConfig(timeout=task["timeout"], method=task["method"],
                              device=task["device"], seed=task["seed"],
                              check_model=task["check_model"],
                              bab=BabConfig(**task.get("bab", {})))
        result = verify(task["onnx"], task["vnnlib"], config)
        return {"result": result.verdict, "time_s": time.monotonic() - start,
                "method": result.method, "message": result.message,
                "first_bound_s": result.stats.get("first_bound_s"),
                "abandoned": result.stats.get("abandoned", "")}
    except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the bench
        from verifier.cli.common import classify_error

        message, _ = classify_error(exc)
        return {"result": "error", "time_s": time.monotonic() - start, "method": "",
                "message": message}


def _worker_main(conn) -> None:
    """Worker loop: import the pipeline once, then answer tasks until told to stop."""
    import verifier.pipeline  # noqa: F401  (pay the torch import before the first clock starts)
    from bounds.heap import release_freed_pages

    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        _log_to_stderr(task.get("log_level", logging.WARNING))
        conn.send(run_task(task))
        release_freed_pages()  # after the answer: 70 ms per GB, not on the instance's clock


def _log_to_stderr(level: int) -> None:
    """A worker's log records go to its stderr (the parent's), tagged with its process id."""
    import sys

    root = logging.getLogger()
    if root.level == level and root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [worker %(process)d] %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level)


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
            "bab": dict(opts.bab), "memory_share": _memory_share(opts),
            "threads": _worker_threads(opts), "log_level": opts.log_level}


def _worker_threads(opts: BenchOptions) -> int | None:
    """Torch threads per worker when workers run side by side: the cores split between them
    (torch's default, every core in every worker, oversubscribes the machine jobs times over).
    None (torch's default) for one worker or in-process."""
    if opts.in_process or opts.jobs <= 1:
        return None
    import os

    return max(1, (os.cpu_count() or 1) // opts.jobs)


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
                   first_bound_s=None if first is None else float(first),
                   abandoned=answer.get("abandoned", ""))


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
            if answer.get("abandoned"):
                worker.kill()  # its abandoned stage would slow the next instance down
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
