"""Heavy intake work (model import and constant folding, spec parsing and expansion) in a
child process under the job memory limit, so that no upload can grow the API process.

Children are forked from a ``forkserver`` that imported the ONNX importer, the spec parser and
torch once (importing torch took 3.3 s and 180 MB per model check), so a check costs a fork
rather than an interpreter start, and every check starts from the same clean memory. The
calling thread watches the memory the child holds of its own (private pages, ``/proc``: the
libraries it shares with the forkserver are not the check's doing) and its run time: past the
memory limit or the time limit the child is killed and the upload refused with a 422 naming
the limit. ``ApiError`` raised in the child comes back as itself.
At most ``Settings.intake_processes`` checks run at once; further requests wait their turn.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from server.errors import ApiError
from server.memory import MIB, private_bytes
from server.settings import Settings

log = logging.getLogger(__name__)

WATCH_S = 0.05
# Imported once by the forkserver: what every check needs (the importer's rules import torch;
# the pipeline's onnxruntime fallback summarises models the importer refuses).
PRELOAD = ["server.sandbox", "server.intake", "verifier.onnx_import.loader", "verifier.spec",
           "verifier.pipeline"]


def _context() -> mp.context.ForkServerContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _child(conn, fn: Callable[..., Any], args: tuple, cpu_s: int) -> None:
    """Run ``fn(*args)`` and send ``("ok", value)``, ``("api", status, message)`` or
    ``("error", text)`` to the parent. ``cpu_s``: a CPU-time limit of the process's own, so
    that a check whose watcher died with the server (``kill -9``) still ends."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    try:
        reply: tuple = ("ok", fn(*args))
    except ApiError as exc:
        reply = ("api", exc.status, exc.message)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs it
        reply = ("error", f"{type(exc).__name__}: {exc}")
    conn.send(reply)
    conn.close()


class Sandbox:
    """Runs intake checks in child processes with ``settings``' limits."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.intake_processes)

    def run(self, fn: Callable[..., Any], args: tuple, what: str,
            memory_mb: int | None = None) -> Any:
        """``fn(*args)`` in a child process; its value, or the ``ApiError`` it raised.

        ``memory_mb``: the limit for this check (default: the server's job memory limit).
        Blocking: call it from a worker thread (``run_in_threadpool``)."""
        limit = memory_mb if memory_mb is not None else self.settings.job_memory_mb
        with self._slots:
            reply = self._run_child(fn, args, what, limit)
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "api":
            raise ApiError(reply[1], reply[2])
        log.error("intake check of %s failed: %s", what, reply[1])
        raise ApiError(500, f"internal error while checking the {what}")

    def _run_child(self, fn: Callable[..., Any], args: tuple, what: str, limit: int) -> tuple:
        ctx = _context()
        parent, child = ctx.Pipe(duplex=False)
        cpu_s = math.ceil(self.settings.intake_timeout_s) + 5
        process = ctx.Process(target=_child, args=(child, fn, args, cpu_s), daemon=True,
                              name="nncert-intake")
        process.start()
        child.close()
        try:
            self._watch(process, parent, what, limit)
            try:
                return parent.recv()
            except EOFError:
                process.join(1.0)
                raise ApiError(422, f"{what} refused: checking it ended the intake process "
                                    f"(exit code {process.exitcode})") from None
        finally:
            if process.is_alive():
                process.kill()
            process.join(5.0)
            parent.close()

    def _watch(self, process, conn, what: str, limit: int) -> None:
        """Return once the child answered or ended; kill it past the limits (422)."""
        deadline = time.monotonic() + self.settings.intake_timeout_s
        while not conn.poll(WATCH_S):
            if not process.is_alive():
                return
            held = private_bytes(process.pid)
            if limit and held is not None and held > limit * MIB:
                raise ApiError(422, f"{what} refused: checking it needs more than {limit} MiB "
                                    "of memory (the job memory limit)")
            if time.monotonic() > deadline:
                raise ApiError(422, f"{what} refused: checking it takes longer than "
                                    f"{self.settings.intake_timeout_s:g} s")


def cuda_available() -> bool:
    """Runs in the sandbox: whether torch sees a CUDA device on this machine (torch is
    imported in the child, never in the API process)."""
    import torch

    return bool(torch.cuda.is_available())


class DeviceProbe:
    """Whether this machine's workers can run ``device=cuda`` jobs, asked once (in the
    sandbox) and remembered."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self._cuda: bool | None = None
        self._lock = threading.Lock()

    def cuda(self) -> bool:
        """Blocking on first use: call from a worker thread."""
        with self._lock:
            if self._cuda is None:
                self._cuda = self.sandbox.run(cuda_available, (), "device check")
            return self._cuda
