"""The local executor: a pool of worker processes fed from the store by one dispatcher thread.

Each slot owns one long-lived ``spawn`` process and a pipe. The dispatcher claims queued jobs
for idle slots, records progress and outcomes, and kills (then restarts) a slot's process when
its job is cancelled, runs past ``timeout + kill_grace_s`` or goes over its memory limit (the
worker's resident set size, read from ``/proc`` by the dispatcher on every round). A process
that dies mid-job makes that job ``failed`` with the exit code as reason; the server itself
never goes down with it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from server.artifacts import Artifacts
from server.executor import POLL_S, Executor
from server.memory import limit_message, over_limit
from server.metrics import Metrics
from server.settings import Settings
from server.store import Job, Store
from server.worker import worker_main

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One worker process and the job it runs."""

    index: int
    process: mp.process.BaseProcess | None = None
    conn: Connection | None = None
    ready: bool = False
    job: Job | None = None
    deadline: float = 0.0
    memory_mb: int = 0


class LocalPool(Executor):
    """Runs queued jobs from ``store`` on ``settings.workers`` local processes."""

    name = "local"

    def __init__(self, settings: Settings, store: Store, artifacts: Artifacts,
                 metrics: Metrics | None = None):
        super().__init__(settings, store, artifacts, metrics)
        self._ctx = mp.get_context("spawn")
        self._slots = [Slot(i) for i in range(settings.workers)]

    def alive(self) -> int:
        return sum(1 for s in self._slots if s.process is not None and s.process.is_alive())

    def _open(self) -> None:
        for slot in self._slots:
            self._spawn(slot)

    def _close(self, timeout: float) -> None:
        for slot in self._slots:
            self._end(slot, graceful=True, timeout=timeout)

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

    # -- dispatch ---------------------------------------------------------------------------
    def _step(self) -> None:
        self._assign()
        conns = {s.conn: s for s in self._slots if s.conn is not None}
        for conn in wait(list(conns), timeout=POLL_S):
            self._receive(conns[conn])
        self._check_slots()

    def _assign(self) -> None:
        for slot in self._slots:
            if self._stop.is_set() or not slot.ready or slot.job is not None:
                continue
            job = self.store.claim_next()
            if job is None:
                return
            task = self.task_for(job)
            slot.job, slot.memory_mb = job, task["memory_mb"]
            slot.deadline = self.deadline_for(job)
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
        job = slot.job
        if job is None or job.id != message[1]:
            return
        if kind == "progress":
            self.store.set_progress(job.id, message[2])
            return
        if kind == "result":
            self.record_result(job, message[2])
        elif kind == "failed":
            self.record_failure(job, message[2])
        slot.job = None
        if len(message) > 3 and message[3]:
            log.info("worker %d still runs work abandoned at job %s's timeout: replacing it",
                     slot.index, job.id)
            self._restart(slot)
        elif over_limit(slot.process.pid, self.settings.worker_recycle_mb):
            log.info("worker %d holds more than %d MiB after job %s: replacing it", slot.index,
                     self.settings.worker_recycle_mb, job.id)
            self._restart(slot)

    def _check_slots(self) -> None:
        cancelled = self._take_cancelled()
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
                    self.record_failure(
                        job, f"worker process died (exit code {code}) while running the job")
                else:
                    log.warning("worker %d exited (code %s); restarting", slot.index, code)
                self._restart(slot)
            elif job is not None and over_limit(slot.process.pid, slot.memory_mb):
                self.record_failure(job, limit_message(slot.memory_mb))
                self._restart(slot)
            elif job is not None and time.monotonic() > slot.deadline:
                self.record_timeout(job)
                self._restart(slot)
