"""The Ray executor: each job is one Ray task on a cluster; outcomes land in the same store.

The server process is the Ray driver. Its dispatcher thread claims queued jobs while fewer than
``settings.workers`` are in flight and submits each as a task (``num_cpus=1``, plus
``num_gpus=1`` when the job asks for device ``cuda``; ``max_retries=0``: a job that killed its
worker is reported, not silently rerun; worker processes are reused, except for GPU jobs, which
always get a fresh one, and ``settings.ray_max_calls`` can limit reuse). Tasks report progress,
their start and a memory-limit breach to a small actor (:class:`ProgressBoard`, no CPU) that
the dispatcher drains.

* cancellation and timeouts: ``ray.cancel(force=True)`` ends the worker process running the
  task (the timeout clock starts when the task starts, not while it waits for resources);
* memory limit: :class:`server.memory.MemoryWatchdog` inside the task; past the limit it
  reports the reason to the board and ends the worker process, so the memory is returned;
* a worker that dies (crash, ``os._exit``, Ray's out-of-memory killer) fails the job with the
  reason; the server keeps going;
* abandoned work: a task whose verifier left an abandoned stage running
  (:func:`server.worker.must_recycle`) hands its outcome to the board and ends its worker
  process, so the next job does not share the CPU with it; the dispatcher records that
  outcome when it sees the worker gone;
* stop: tasks in flight are cancelled and their jobs stay ``running`` in the store, so the
  next start re-queues them (attempts kept), as with the local pool.

The cluster's workers must be able to import ``server`` and ``verifier`` (the same nncert
install as the server: see docker/compose.yaml), and the job runner's module.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from server.executor import POLL_S, Executor
from server.memory import MemoryWatchdog, limit_message, release_memory
from server.store import Job
from server.worker import load_runner, must_recycle, run_task, throttled

log = logging.getLogger(__name__)

MEMORY_EXIT_CODE = 71
RECYCLE_EXIT_CODE = 72


def import_ray():
    """The ``ray`` module, or a RuntimeError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the Ray executor needs ray (pip install 'nncert[ray]'): "
                           f"{exc}") from None
    return ray


class ProgressBoard:
    """A Ray actor collecting what tasks report: started jobs, the latest progress event of
    each job, and the outcomes of tasks that ended their own process (a failure reason, or
    the job's result when the worker ended to drop abandoned work)."""

    def __init__(self) -> None:
        self._started: list[str] = []
        self._progress: dict[str, dict] = {}
        self._endings: dict[str, tuple[str, Any]] = {}

    def started(self, job_id: str) -> None:
        self._started.append(job_id)

    def put(self, job_id: str, event: dict) -> None:
        self._progress[job_id] = event

    def fail(self, job_id: str, reason: str) -> None:
        self._endings[job_id] = ("failed", reason)

    def finish(self, job_id: str, kind: str, payload: Any) -> None:
        self._endings[job_id] = (kind, payload)

    def take(self) -> tuple[list[str], dict[str, dict]]:
        """Started jobs and progress events since the last call."""
        started, progress = self._started, self._progress
        self._started, self._progress = [], {}
        return started, progress

    def ending(self, job_id: str) -> tuple[str, Any] | None:
        """``(kind, payload)`` left by a task that ended its own process, else None."""
        return self._endings.pop(job_id, None)


def run_job(job_id: str, task: dict, runner_spec: str, board: Any) -> tuple[str, Any]:
    """The body of a job's Ray task: ``("result", outcome)`` or ``("failed", reason)``."""
    import ray

    board.started.remote(job_id)

    def exceeded(limit_mb: int) -> None:
        try:
            ray.get(board.fail.remote(job_id, limit_message(limit_mb)), timeout=10)
        finally:
            os._exit(MEMORY_EXIT_CODE)

    progress = throttled(lambda event: board.put.remote(job_id, event))
    try:
        with MemoryWatchdog(task.get("memory_mb"), exceeded):
            runner = load_runner(runner_spec)
            outcome = run_task(runner, job_id, task, progress)
    finally:
        release_memory()  # the worker may run the next job
    if must_recycle():
        # Ray reuses the process for the next task: hand the outcome over and end it, or the
        # abandoned stage would keep a core busy under the next job until its own deadline.
        try:
            ray.get(board.finish.remote(job_id, *outcome), timeout=10)
        finally:
            os._exit(RECYCLE_EXIT_CODE)
    return outcome


def run_gpu_job(job_id: str, task: dict, runner_spec: str, board: Any) -> tuple[str, Any]:
    """:func:`run_job` for jobs that hold a GPU (a separate Ray function so that it always
    gets a fresh worker process, which returns the GPU memory torch caches)."""
    return run_job(job_id, task, runner_spec, board)


def init_keeping_sigterm(ray, **kwargs) -> None:
    """``ray.init``, then give SIGTERM back to whoever handled it before (uvicorn's graceful
    shutdown): in the main thread Ray replaces that handler with one that exits at once."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(**kwargs)
    if main and previous is not None:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class InFlight:
    """A job handed to Ray and its task."""

    job: Job
    ref: Any
    deadline: float | None = None  # set once the task has started


class RayExecutor(Executor):
    """Runs queued jobs as Ray tasks on the cluster at ``settings.ray_address``."""

    name = "ray"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inflight: dict[str, InFlight] = {}
        self._ray = None
        self._own_connection = False
        self._board = None
        self._task = None
        self._gpu_task = None

    def alive(self) -> int:
        return self.settings.workers if self._ray is not None else 0

    # -- connection ---------------------------------------------------------------------------
    def _open(self) -> None:
        ray = import_ray()
        address = self.settings.ray_address or None
        if not ray.is_initialized():
            kwargs: dict = {"namespace": self.settings.ray_namespace, "log_to_driver": False}
            if address in (None, "local"):
                kwargs.update(address="local", include_dashboard=False)
            else:
                kwargs["address"] = address
            try:
                init_keeping_sigterm(ray, **kwargs)
            except Exception as exc:
                raise RuntimeError(f"cannot connect to the Ray cluster at {address or 'local'}:"
                                   f" {exc}") from exc
            self._own_connection = True
        self._board = self._new_board(ray)
        self._task = ray.remote(max_retries=0, max_calls=self.settings.ray_max_calls)(run_job)
        self._gpu_task = ray.remote(max_retries=0, max_calls=1)(run_gpu_job)
        self._ray = ray
        log.info("Ray executor: cluster %s, resources %s", address or "local",
                 ray.cluster_resources())

    @staticmethod
    def _new_board(ray):
        return ray.remote(num_cpus=0, max_restarts=-1)(ProgressBoard).remote()

    def _close(self, timeout: float) -> None:
        ray = self._ray
        if ray is None:
            return
        for item in self._inflight.values():
            self._kill(item)
        self._inflight.clear()
        try:
            ray.kill(self._board)
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            log.debug("could not end the progress board", exc_info=True)
        if self._own_connection:
            ray.shutdown()
        self._ray = None

    def _kill(self, item: InFlight) -> None:
        try:
            self._ray.cancel(item.ref, force=True)
        except Exception:  # noqa: BLE001 - finished or unknown tasks cannot be cancelled
            log.debug("cancel of job %s's task failed", item.job.id, exc_info=True)

    # -- dispatch ---------------------------------------------------------------------------
    def _step(self) -> None:
        for job_id in self._take_cancelled():
            item = self._inflight.pop(job_id, None)
            if item is not None:
                log.info("job %s cancelled: cancelling its Ray task", job_id)
                self._kill(item)
        self._submit()
        self._read_board()
        refs = [item.ref for item in self._inflight.values()]
        if not refs:
            self._wake.wait(POLL_S)
            return
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=POLL_S, fetch_local=False)
        if ready:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        for item in [i for i in self._inflight.values() if i.ref in done]:
            self._collect(item)
        now = time.monotonic()
        for item in list(self._inflight.values()):
            if item.deadline is not None and now > item.deadline:
                self._kill(item)
                del self._inflight[item.job.id]
                self.record_timeout(item.job)

    def _submit(self) -> None:
        while not self._stop.is_set() and len(self._inflight) < self.settings.workers:
            job = self.store.claim_next()
            if job is None:
                return
            gpus = 1 if job.options.get("device") == "cuda" else 0
            if gpus and not self._ray.cluster_resources().get("GPU"):
                self.record_failure(job, "the job asks for device cuda but the Ray cluster "
                                         "has no GPU")
                continue
            function = self._gpu_task if gpus else self._task
            ref = function.options(num_cpus=1, num_gpus=gpus, name=f"nncert-job-{job.id}"
                                   ).remote(job.id, self.task_for(job), self.settings.job_runner,
                                            self._board)
            self._inflight[job.id] = InFlight(job, ref)
            log.info("job %s -> Ray task (attempt %d, %d GPU)", job.id, job.attempts, gpus)

    def _read_board(self) -> None:
        try:
            started, progress = self._ray.get(self._board.take.remote(), timeout=10)
        except (self._ray.exceptions.RayActorError, self._ray.exceptions.GetTimeoutError):
            log.warning("the progress board did not answer (Ray restarts it)", exc_info=True)
            return
        for job_id in started:
            item = self._inflight.get(job_id)
            if item is not None and item.deadline is None:
                item.deadline = self.deadline_for(item.job)
        for job_id, event in progress.items():
            if job_id in self._inflight:
                self.store.set_progress(job_id, event)

    def _collect(self, item: InFlight) -> None:
        ray = self._ray
        del self._inflight[item.job.id]
        try:
            kind, payload = ray.get(item.ref, timeout=0)
        except ray.exceptions.TaskCancelledError:
            return
        except ray.exceptions.RayError as exc:
            kind, payload = self._ending(item.job, exc)
        if kind == "result":
            self.record_result(item.job, payload)
        else:
            self.record_failure(item.job, payload)

    def _ending(self, job: Job, exc: Exception) -> tuple[str, Any]:
        """The outcome of a task whose worker process ended: what it left on the board (its
        result when it ended to drop abandoned work, the memory limit's reason), else why
        it died (Ray's out-of-memory killer, a crash)."""
        try:
            ending = self._ray.get(self._board.ending.remote(job.id), timeout=10)
        except self._ray.exceptions.RayError:
            ending = None
        if ending:
            return ending
        if isinstance(exc, self._ray.exceptions.OutOfMemoryError):
            return "failed", "the Ray node ran out of memory and killed the job's worker"
        first = str(exc).strip().splitlines()
        detail = f": {first[0]}" if first else ""
        return "failed", f"Ray worker died while running the job ({type(exc).__name__}{detail})"
