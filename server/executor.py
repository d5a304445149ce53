"""The executor interface: where queued jobs run. Two implementations, chosen by
``Settings.executor``: :class:`server.jobs.LocalPool` (worker processes on this machine, the
default) and :class:`server.ray_executor.RayExecutor` (Ray tasks on a cluster).

The routes only call :meth:`Executor.notify`, :meth:`Executor.cancel` and :meth:`Executor.alive`.
Both implementations run one dispatcher thread that claims jobs from the store, and record
outcomes through the same helpers here, so a job ends the same way whichever runs it:
``done`` with a verdict, ``done``/``timeout`` when killed past ``timeout + kill_grace_s``,
``failed`` with a reason (runner error, crash, memory limit), or ``cancelled`` by the API.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

from server.artifacts import Artifacts
from server.metrics import Metrics
from server.settings import Settings
from server.store import Job, Store

log = logging.getLogger(__name__)

POLL_S = 0.2


class Executor(ABC):
    """Runs queued jobs from ``store``; subclasses implement the ``_open``/``_step``/``_close``
    of their dispatcher thread."""

    name = "executor"

    def __init__(self, settings: Settings, store: Store, artifacts: Artifacts,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.metrics = metrics or Metrics()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- the interface the routes use ----------------------------------------------------------
    def start(self) -> None:
        """Open the executor's resources and start dispatching (no-op with 0 workers)."""
        if self.settings.workers == 0:
            return
        self._open()
        self._thread = threading.Thread(target=self._loop, name=f"nncert-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop dispatching and end what runs (running jobs stay ``running`` and are
        re-queued by the next start's recovery)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close(timeout)

    def notify(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """The store already marks the job cancelled; this stops it promptly."""
        with self._lock:
            self._cancel.add(job_id)
        self._wake.set()

    @abstractmethod
    def alive(self) -> int:
        """How many jobs can run now (worker processes alive, or Ray slots when connected)."""

    # -- for the implementations -----------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _step(self) -> None:
        """One round of the dispatcher: start jobs, collect outcomes, enforce limits.
        Must block at most about ``POLL_S``."""

    @abstractmethod
    def _close(self, timeout: float) -> None: ...

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the dispatcher must survive anything
                log.exception("%s dispatcher step failed", self.name)
                time.sleep(POLL_S)
            if self._wake.is_set():
                self._wake.clear()

    def _take_cancelled(self) -> set[str]:
        with self._lock:
            cancelled, self._cancel = self._cancel, set()
        return cancelled

    def memory_mb(self, job: Job) -> int:
        """The job's memory limit in MiB (0: none): its option, else the server default."""
        value = job.options.get("memory_mb")
        return int(value) if value is not None else self.settings.job_memory_mb

    def task_for(self, job: Job) -> dict:
        """What the runner receives: stored file paths, the options, the memory limit and
        whether to check the model against onnxruntime."""
        return {
            "model_path": str(self.artifacts.path("models", job.model_id)),
            "spec_path": str(self.artifacts.path("specs", job.spec_id)),
            **job.options,
            "memory_mb": self.memory_mb(job),
            "check_model": self.settings.check_model,
        }

    def deadline_for(self, job: Job) -> float:
        """Monotonic time past which a job started now is killed."""
        return time.monotonic() + job.options["timeout"] + self.settings.kill_grace_s

    def record_result(self, job: Job, out: dict) -> None:
        self.store.finish(job.id, "done", verdict=out["verdict"],
                          counterexample=out.get("counterexample"),
                          message=out.get("message", ""), method_used=out.get("method", ""),
                          time_s=out.get("time_s"))
        self._count(job, out["verdict"])

    def record_failure(self, job: Job, reason: str) -> None:
        log.warning("job %s failed: %s", job.id, reason)
        self.store.finish(job.id, "failed", verdict="error", message=reason)
        self._count(job, "failed")

    def record_timeout(self, job: Job) -> None:
        log.warning("job %s past its timeout: killed", job.id)
        self.store.finish(job.id, "done", verdict="timeout", message="killed after its timeout",
                          time_s=time.time() - (job.started_at or time.time()))
        self._count(job, "timeout")

    def _count(self, job: Job, outcome: str) -> None:
        started = job.started_at
        self.metrics.job_finished(outcome, time.time() - started if started else None)


def make_executor(settings: Settings, store: Store, artifacts: Artifacts,
                  metrics: Metrics | None = None) -> Executor:
    """The executor ``settings.executor`` names."""
    if settings.executor == "ray":
        from server.ray_executor import RayExecutor

        return RayExecutor(settings, store, artifacts, metrics)
    from server.jobs import LocalPool

    return LocalPool(settings, store, artifacts, metrics)
