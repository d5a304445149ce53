"""Memory safety: a model or spec that cannot fit answers ``unknown`` with the reason.

The Linux out-of-memory killer gives no answer at all (TinyYOLO bench workers died with exit
-9). Two defences, both here:

* before the bound stages, :func:`bounds_fit` estimates what one interval pass and one
  backward pass chunk (of one spec row) need (``bounds.engine.budget``) against the memory
  free on the device; a model that cannot fit is not bounded (the attack still runs) and
  the answer names why;
* :func:`cap_process_memory` (called by processes that run verifications: bench workers, and
  the CLI) sets RLIMIT_DATA to a share of the memory available, so an allocation beyond it
  fails inside the process (``MemoryError``, torch's "can't allocate memory") instead of the
  kernel killing it; :func:`is_out_of_memory` recognises those errors and the pipeline answers
  ``unknown``.
* :class:`MemoryFloor` (started with the cap by :func:`guard_process_memory`) covers what a cap
  fixed at the start cannot: other processes that grow later. Two verifications side by side
  (two CLI runs, two benches) each capped at a share of what was free when it started can
  together ask for more than the machine has, and the kernel then kills one (a carvana
  `verify` at 19 GB beside a bench worker on 24 GB). The floor watches the machine's
  available memory; when it falls below FLOOR_SHARE of the total, it lowers this process's
  limit to what the process holds now (plus a little), so its next large allocation fails
  inside it (an ``unknown`` answer) instead of the machine running out; the limit goes back
  up once memory is available again. Every process under the floor stops growing, so the
  kernel is not left to choose one to kill.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
from collections.abc import Callable

import torch

from bounds.engine.budget import (
    COEF_COPIES,
    data_bytes,
    element_size,
    free_bytes,
    ibp_pass_bytes,
    proc_field,
)
from bounds.graph import Graph

log = logging.getLogger(__name__)

# Share of the memory available when a process starts that its data segment may grow to.
PROCESS_MEMORY_SHARE = 0.8
# One bound pass must fit in this share of the free memory (the rest: attack, queue, slack).
PASS_FIT_SHARE = 0.5

_OOM_MARKERS = ("can't allocate memory", "out of memory", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure: MemoryError, CUDA out of memory, torch's CPU allocator
    refusing (a RuntimeError "can't allocate memory"), or any RuntimeError while this process
    is at its memory limit (:func:`at_memory_limit`): libraries below torch word a refused
    allocation their own way (oneDNN: "could not create a primitive", seen under the floor)."""
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(m in text for m in _OOM_MARKERS) or at_memory_limit()


# A data segment within this much of its soft limit counts as at the limit.
LIMIT_MARGIN = 256 << 20


def at_memory_limit() -> bool:
    """Whether this process's memory is held back now: its floor has clamped it, or its data
    segment is within LIMIT_MARGIN of RLIMIT_DATA's soft limit."""
    if _FLOOR is not None and _FLOOR.clamped:
        return True
    try:
        import resource
    except ImportError:
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return soft != resource.RLIM_INFINITY and data_bytes() > soft - LIMIT_MARGIN


def out_of_memory_reason(exc: BaseException) -> str:
    """A one-line reason from an allocation failure."""
    first = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def release_memory(device: str) -> None:
    """Return what can be returned after a failed allocation."""
    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def halved_after_out_of_memory(size: int, exc: BaseException, device: str, search: str) -> int:
    """The batch for a search's steps after one of ``size`` domains ran out of memory (its
    domains back in the queue): half as many, once what can be returned has been. The
    searches go on in smaller steps instead of the run answering ``unknown`` (a TinyYOLO
    search did so at 151 s of 300, its worst bound -0.21 and rising)."""
    release_memory(device)
    smaller = max(1, size // 2)
    log.warning("%s: a step of %d domains ran out of memory (%s); the next take %d", search,
                size, out_of_memory_reason(exc), smaller)
    return smaller


def pass_bytes(graph: Graph, dtype: torch.dtype) -> int:
    """Memory of the smallest first bound pass: one interval pass (intervals and rounding
    allowances of every value) and one backward chunk of one spec row over the widest value.
    (The engines take spec rows in chunks sized to the memory free, ``chunk_rows``: a spec of
    999 disjuncts over a VGG16 was refused every bound, 119.5 GiB for all rows at once, where
    the interval pass needs 0.64 GiB, a one-row chunk 0.12 GiB and the constants 2.06 GiB.)"""
    widest = max([math.prod(graph.inputs[0].shape)] + [math.prod(n.shape) for n in graph.nodes])
    backward = COEF_COPIES * widest * element_size(dtype)
    params = 2 * graph.parameter_count() * element_size(dtype)  # materialised constants
    return ibp_pass_bytes(graph, 1, dtype) + backward + params


def bounds_fit(graph: Graph, device: str, dtype: torch.dtype) -> str | None:
    """None when a first bound pass fits PASS_FIT_SHARE of the memory free on ``device``;
    else the reason, in words."""
    need, free = pass_bytes(graph, dtype), free_bytes(device)
    if need <= PASS_FIT_SHARE * free:
        return None
    return (f"one bound pass needs about {need / 2**30:.2f} GiB and {free / 2**30:.2f} GiB "
            f"is free on {device}")


def cap_process_memory(share: float = PROCESS_MEMORY_SHARE) -> int | None:
    """Limit this process's data segment to what it holds now plus ``share`` of the memory
    available on the machine (at most the hard limit); returns the limit in bytes, None where
    it cannot be set. Allocations beyond it fail with an error the pipeline answers as
    ``unknown`` instead of the kernel killing the process."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    available = _available_bytes()
    if available is None:
        return None
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = int(share * available) + data_bytes()
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError) as exc:
        log.info("could not cap the process memory: %s", exc)
        return None
    return limit


def _available_bytes() -> int | None:
    return proc_field("/proc/meminfo", "MemAvailable")


def _total_bytes() -> int | None:
    return proc_field("/proc/meminfo", "MemTotal")


# Below this share of the machine's memory available, processes under a MemoryFloor stop
# growing (the kernel's out-of-memory killer acts near zero).
FLOOR_SHARE = 0.05
# What a clamped process may still allocate beyond what it holds (small Python objects, the
# logging of the failure), and how often the floor reads /proc/meminfo.
FLOOR_SLACK = 64 << 20
FLOOR_INTERVAL_S = 0.05


class MemoryFloor:
    """A daemon thread that keeps this process from taking the machine's last memory (module
    docstring): below ``floor`` bytes available, RLIMIT_DATA's soft limit drops to the data
    segment now plus FLOOR_SLACK; at twice the floor it returns to ``cap`` (the limit set at
    the start). ``available``: the reader of the machine's available bytes (tests inject
    one)."""

    def __init__(self, floor: int, cap: int,
                 available: Callable[[], int | None] | None = None,
                 interval: float = FLOOR_INTERVAL_S):
        self.floor, self.cap, self.interval = floor, cap, interval
        self.available = available or _available_bytes
        self.clamped = False
        self.clamps = 0  # times the limit was lowered (for tests and the log)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-floor", daemon=True)

    def start(self) -> MemoryFloor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the guard must never take the process down
                log.debug("memory floor check failed", exc_info=True)

    def check(self) -> None:
        """One reading: clamp below the floor, release at twice the floor."""
        avail = self.available()
        if avail is None:
            return
        if not self.clamped and avail < self.floor:
            self._set(min(self.cap, data_bytes() + FLOOR_SLACK))
            self.clamped, self.clamps = True, self.clamps + 1
            log.warning("memory: %.2f GiB available on the machine, below the floor of %.2f "
                        "GiB: this process stops growing", avail / 2**30, self.floor / 2**30)
        elif self.clamped and avail >= 2 * self.floor:
            self._set(self.cap)
            self.clamped = False

    @staticmethod
    def _set(limit: int) -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


_FLOOR: MemoryFloor | None = None  # the process's one floor


def guard_process_memory(share: float = PROCESS_MEMORY_SHARE) -> MemoryFloor | None:
    """:func:`cap_process_memory`, and a :class:`MemoryFloor` under that cap (None where the
    limit cannot be set or the machine's memory cannot be read). Once per process: a later
    call (the next verification of an in-process caller) keeps the running floor and cap."""
    global _FLOOR
    if _FLOOR is not None:
        return _FLOOR
    cap = cap_process_memory(share)
    total = _total_bytes()
    if cap is None or total is None:
        return None
    _FLOOR = MemoryFloor(int(FLOOR_SHARE * total), cap).start()
    return _FLOOR
