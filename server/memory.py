"""Per-job memory limits: resident set size read from ``/proc``, and a watchdog thread.

Why a watchdog on RSS and not ``RLIMIT_AS``/``RLIMIT_DATA``: torch and the CUDA runtime reserve
large ranges of virtual address space they never touch (and glibc reserves an arena per thread),
so a limit on address space fails a job long before it uses that much memory, and a failed
allocation surfaces as an arbitrary ``MemoryError``/``RuntimeError`` deep in the verifier.
Measured with CPU torch 2.13 on the tiny test model: 301 MiB resident, 1.65 GiB virtual
(VmPeak); under RLIMIT_DATA = 1 GiB the same verification dies with a bare ``MemoryError`` at
250 MiB resident (a CUDA context reserves far more address space still). RSS is what the
machine actually gives the job.

The local pool reads its workers' RSS from the server process on every dispatcher round (about
5 times a second; a job that holds the GIL cannot stall that check); the Ray executor runs
:class:`MemoryWatchdog` inside the task (10 times a second).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MIB = 1 << 20
WATCH_INTERVAL_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size of ``pid`` (default: this process) in bytes; None when unknown
    (the process is gone, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def private_bytes(pid: int) -> int | None:
    """Memory only ``pid`` holds (private clean + dirty pages, ``/proc/PID/smaps_rollup``), in
    bytes; None when unknown. A process forked from a server that imported a library shares
    that library's pages: RSS counts them, this does not."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total = sum(int(line.split()[1]) for line in lines
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")))
    return total * 1024


def limit_message(limit_mb: int) -> str:
    """The failure reason recorded for a job that went over its memory limit."""
    return f"memory limit of {limit_mb} MiB exceeded"


def child_pids(pid: int | None = None) -> list[int]:
    """The child processes of ``pid`` (default: this process), from every thread's
    ``/proc/PID/task/TID/children`` (empty where the kernel does not list them)."""
    pid = pid or os.getpid()
    out: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def over_limit(pid: int | None, limit_mb: int | None) -> bool:
    """True when ``pid`` and its child processes (a job's MILP solver runs in one:
    ``verifier.milp.highs_run``) use more than ``limit_mb`` MiB (never for a limit of None or
    0)."""
    if not limit_mb:
        return False
    rss = family_rss_bytes(pid)
    return rss is not None and rss > limit_mb * MIB


def family_rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size of ``pid`` (default: this process) and of its child processes, in
    bytes; None when ``pid`` is gone."""
    rss = rss_bytes(pid)
    if rss is None:
        return None
    return rss + sum(rss_bytes(child) or 0 for child in child_pids(pid))


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc ``malloc_trim``),
    so that a reused worker process starts its next job close to its baseline RSS."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class MemoryWatchdog:
    """A daemon thread that calls ``on_exceed(limit_mb)`` once this process's RSS passes
    ``limit_mb`` MiB. ``on_exceed`` is expected to end the process (``os._exit``): only that
    returns the memory promptly. Use as a context manager around the job."""

    def __init__(self, limit_mb: int | None, on_exceed: Callable[[int], None],
                 interval: float = WATCH_INTERVAL_S):
        self.limit_mb = limit_mb
        self.on_exceed = on_exceed
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if over_limit(None, self.limit_mb):
                log.warning("job over its memory limit of %s MiB", self.limit_mb)
                self.on_exceed(self.limit_mb)
                return

    def __enter__(self) -> MemoryWatchdog:
        if self.limit_mb:
            self._thread = threading.Thread(target=self._watch, name="nncert-memory-watch",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
