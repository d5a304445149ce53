"""Code that runs inside a worker process (started with ``spawn``).

Kept light at import time: the verifier is imported by the default runner when the first job
arrives, so a worker with a test runner starts quickly. Messages to the parent, over a pipe:
``("ready",)``, ``("progress", job_id, dict)``, ``("result", job_id, dict, recycle)`` and
``("failed", job_id, reason, recycle)`` (``recycle``: replace this process before the next
job, work abandoned by the verifier's watchdog still runs in it).

A worker never outlives its server: a watchdog thread ends the process as soon as its parent
is gone (after ``kill -9`` of the server the pipe is not read while a job runs, so EOF alone
would not stop it until the job ended).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
PARENT_CHECK_S = 0.5
ORPHAN_EXIT_CODE = 70


def load_runner(spec: str) -> Callable[[dict, Callable[[dict], None]], dict]:
    """Import ``module:function``."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def run_verification(task: dict, progress: Callable[[dict], None]) -> dict:
    """The default runner: ``verifier.verify`` on the stored model and spec files."""
    from bounds.engine.budget import set_host_limit
    from verifier.config import VerifyConfig
    from verifier.pipeline import verify
    from verifier.spec import load_query

    # the job's memory limit, which its supervisor enforces on the resident set: the engines
    # and the search's queue size themselves to it (0 or absent: no limit)
    set_host_limit((task.get("memory_mb") or 0) << 20 or None)
    check = task.get("check_model", True)
    if not check:
        log.warning("job on %s: model check against onnxruntime skipped (check_model=False)",
                    task["model_path"])
    config = VerifyConfig(timeout=task["timeout"], method=task["method"], device=task["device"],
                          check_model=check)
    query = load_query(task["spec_path"], compose=True)
    if query.needs_composition:
        return _run_composed(task, query, config, progress)
    result = verify(task["model_path"], query.spec, config, progress=progress)
    cex = None
    if result.counterexample is not None:
        cex = _flat_cex(result.counterexample.x, result.counterexample.y)
    return _outcome(result, cex)


def _run_composed(task: dict, query, config, progress: Callable[[dict], None]) -> dict:
    """A query verified on the composed model (hidden tensors, several tensors, a network
    equal-to the uploaded one, products): the uploaded model stands for every network; the
    counterexample is every declared input element, then every hidden and output element."""
    from verifier.compose.bind import one_model_per_network
    from verifier.compose.report import flat_inputs_outputs
    from verifier.compose.run import verify_query
    from verifier.onnx_import.loader import read_model_proto

    proto, _ = read_model_proto(task["model_path"])
    models = one_model_per_network(query.info, proto)
    found = verify_query(query, models, config, "uploaded model", progress)
    cex = None
    if found.assignment is not None:
        cex = _flat_cex(*flat_inputs_outputs(found.assignment))
    return _outcome(found.result, cex)


def _flat_cex(x, y) -> dict:
    return {"x": [float(v) for v in x.reshape(-1)], "y": [float(v) for v in y.reshape(-1)]}


def _outcome(result, cex: dict | None) -> dict:
    return {"verdict": result.verdict, "counterexample": cex, "time_s": result.time_s,
            "method": result.method, "message": result.message}


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else str(f)


def exit_with_parent(parent_pid: int, interval: float = PARENT_CHECK_S) -> threading.Thread:
    """Start a daemon thread that ends this process once ``parent_pid`` is no longer its
    parent (the parent died and the process was re-parented)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                log.warning("server process %d is gone: worker %d exits", parent_pid,
                            os.getpid())
                os._exit(ORPHAN_EXIT_CODE)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="nncert-parent-watch", daemon=True)
    thread.start()
    return thread


def throttled(send: Callable[[dict], None],
              interval: float = PROGRESS_INTERVAL_S) -> Callable[[dict], None]:
    """A progress callback that passes on at most one event per ``interval`` seconds
    (JSON-safe)."""
    last = [0.0]

    def progress(event: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= interval:
            last[0] = now
            send(_json_safe(event))

    return progress


def run_task(runner: Callable[[dict, Callable[[dict], None]], dict], job_id: str, task: dict,
             progress: Callable[[dict], None]) -> tuple[str, Any]:
    """Run one job: ``("result", outcome)`` or ``("failed", reason)``; never raises."""
    from verifier.errors import NncertError

    try:
        return "result", runner(task, progress)
    except NncertError as exc:
        return "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as the job's failure reason
        log.exception("job %s raised", job_id)
        return "failed", f"internal error: {type(exc).__name__}: {exc}"


def worker_main(conn, runner_spec: str, parent_pid: int | None = None) -> None:
    """Loop: receive ``(job_id, task)``, run it, send the outcome; ``None`` or EOF stops.

    ``parent_pid``: the server's pid; the worker exits on its own when that process dies.
    """
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    runner = load_runner(runner_spec)
    from bounds.heap import release_freed_pages

    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, task = message
        progress = throttled(lambda event, job_id=job_id: conn.send(("progress", job_id, event)))
        kind, payload = run_task(runner, job_id, task, progress)
        conn.send((kind, job_id, payload, must_recycle()))
        # the next job's memory budget starts from the OS's (bounds.heap); after the answer,
        # off the job's clock (about 70 ms per GB)
        release_freed_pages()


def must_recycle() -> bool:
    """Whether the job left work running (a stage the watchdog abandoned at the timeout):
    the parent then replaces this process before the next job."""
    import sys

    watchdog = sys.modules.get("verifier.watchdog")
    return bool(watchdog and watchdog.abandoned_running())
