"""A local pool of worker processes fed from the store by one dispatcher thread.

Each slot owns one long-lived ``spawn`` process and a pipe. The dispatcher claims queued jobs
for idle slots, records progress and outcomes, and kills (then restarts) a slot's process when
its job is cancelled or runs past ``timeout + kill_grace_s``. A process that dies mid-job makes
that job ``failed`` with the exit code as reason; the server itself never goes down with it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from server.artifacts import Artifacts
from server.metrics import Metrics
from server.settings import Settings
from server.store import Job, Store
from server.worker import worker_main

log = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class Slot:
    """One worker process and the job it runs."""

    index: int
    process: mp.process.BaseProcess | None = None
    conn: Connection | None = None
    ready: bool = False
    job: Job | None = None
    deadline: float = 0.0
    cancelled: set[str] = field(default_factory=set)


class JobManager:
    """Runs queued jobs from ``store`` on ``settings.workers`` processes."""

    def __init__(self, settings: Settings, store: Store, artifacts: Artifacts,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.metrics = metrics or Metrics()
        self._ctx = mp.get_context("spawn")
        self._slots = [Slot(i) for i in range(settings.workers)]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for slot in self._slots:
            self._spawn(slot)
        if self._slots:
            self._thread = threading.Thread(target=self._loop, name="nncert-dispatch",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop dispatching and end every worker process (running jobs stay ``running`` and
        are re-queued by the next start's recovery)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for slot in self._slots:
            self._end(slot, graceful=True, timeout=timeout)

    def alive(self) -> int:
        return sum(1 for s in self._slots if s.process is not None and s.process.is_alive())

    def notify(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """The store already marks the job cancelled; this stops its worker promptly."""
        with self._lock:
            self._cancel.add(job_id)
        self._wake.set()

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main, args=(child, self.settings.job_runner, os.getpid()),
            name=f"nncert-worker-{slot.index}", daemon=True)
        process.start()
        child.close()
        slot.process, slot.conn, slot.ready, slot.job = process, parent, False, None

    def _end(self, slot: Slot, graceful: bool, timeout: float = 5.0) -> None:
        process, conn = slot.process, slot.conn
        if process is None:
            return
        if graceful and slot.job is None and conn is not None:
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(min(timeout, 2.0))
        if process.is_alive():
            process.kill()
        process.join(timeout)
        if conn is not None:
            conn.close()
        slot.process, slot.conn, slot.ready, slot.job = None, None, False, None

    def _restart(self, slot: Slot) -> None:
        self._end(slot, graceful=False)
        if not self._stop.is_set():
            self._spawn(slot)

    # -- dispatch loop -----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the dispatcher must survive anything
                log.exception("dispatcher step failed")
                time.sleep(POLL_S)

    def _step(self) -> None:
        self._assign()
        conns = {s.conn: s for s in self._slots if s.conn is not None}
        for conn in wait(list(conns), timeout=POLL_S):
            self._receive(conns[conn])
        self._check_slots()
        if self._wake.is_set():
            self._wake.clear()

    def _assign(self) -> None:
        for slot in self._slots:
            if self._stop.is_set() or not slot.ready or slot.job is not None:
                continue
            job = self.store.claim_next()
            if job is None:
                return
            task = {
                "model_path": str(self.artifacts.path("models", job.model_id)),
                "spec_path": str(self.artifacts.path("specs", job.spec_id)),
                **job.options,
            }
            slot.job = job
            slot.deadline = time.monotonic() + job.options["timeout"] + self.settings.kill_grace_s
            log.info("job %s -> worker %d (attempt %d)", job.id, slot.index, job.attempts)
            try:
                slot.conn.send((job.id, task))
            except OSError:
                pass  # the death is noticed by _check_slots

    def _receive(self, slot: Slot) -> None:
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            return  # process died: _check_slots records it
        kind = message[0]
        if kind == "ready":
            slot.ready = True
            return
        job_id = message[1]
        if slot.job is None or slot.job.id != job_id:
            return
        if kind == "progress":
            self.store.set_progress(job_id, message[2])
        elif kind == "result":
            out = message[2]
            self.store.finish(job_id, "done", verdict=out["verdict"],
                              counterexample=out.get("counterexample"),
                              message=out.get("message", ""), method_used=out.get("method", ""),
                              time_s=out.get("time_s"))
            self._finished(slot, out["verdict"])
        elif kind == "failed":
            self.store.finish(job_id, "failed", verdict="error", message=message[2])
            self._finished(slot, "failed")

    def _finished(self, slot: Slot, outcome: str) -> None:
        """Count a finished job in the metrics and free its slot."""
        job = slot.job
        if job is not None:
            started = job.started_at
            self.metrics.job_finished(outcome, time.time() - started if started else None)
        slot.job = None

    def _check_slots(self) -> None:
        with self._lock:
            cancelled, self._cancel = self._cancel, set()
        for slot in self._slots:
            if slot.process is None:
                continue
            job = slot.job
            if job is not None and job.id in cancelled:
                log.info("job %s cancelled: restarting worker %d", job.id, slot.index)
                self._restart(slot)
            elif not slot.process.is_alive():
                code = slot.process.exitcode
                if job is not None:
                    reason = f"worker process died (exit code {code}) while running the job"
                    self.store.finish(job.id, "failed", verdict="error", message=reason)
                    self._finished(slot, "failed")
                    log.warning("job %s: %s", job.id, reason)
                else:
                    log.warning("worker %d exited (code %s); restarting", slot.index, code)
                self._restart(slot)
            elif job is not None and time.monotonic() > slot.deadline:
                log.warning("job %s past its timeout: killing worker %d", job.id, slot.index)
                self.store.finish(job.id, "done", verdict="timeout",
                                  message="killed after its timeout",
                                  time_s=time.time() - (job.started_at or time.time()))
                self._finished(slot, "timeout")
                self._restart(slot)
