"""Memory safety: a model or spec that cannot fit answers ``unknown`` with the reason.

The Linux out-of-memory killer gives no answer at all (TinyYOLO bench workers died with exit
-9). Two defences, both here:

* before the bound stages, :func:`bounds_fit` estimates what one interval pass and one
  backward pass chunk need (``bounds.engine.budget``) against the memory free on the device;
  a model that cannot fit is not bounded (the attack still runs) and the answer names why;
* :func:`cap_process_memory` (called by processes that run verifications: bench workers, and
  the CLI) sets RLIMIT_DATA to a share of the memory available, so an allocation beyond it
  fails inside the process (``MemoryError``, torch's "can't allocate memory") instead of the
  kernel killing it; :func:`is_out_of_memory` recognises those errors and the pipeline answers
  ``unknown``.
"""

from __future__ import annotations

import gc
import logging
import math

import torch

from bounds.engine.budget import (
    COEF_COPIES,
    data_bytes,
    element_size,
    free_bytes,
    ibp_pass_bytes,
)
from bounds.graph import Graph

log = logging.getLogger(__name__)

# Share of the memory available when a process starts that its data segment may grow to.
PROCESS_MEMORY_SHARE = 0.8
# One bound pass must fit in this share of the free memory (the rest: attack, queue, slack).
PASS_FIT_SHARE = 0.5

_OOM_MARKERS = ("can't allocate memory", "out of memory", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure: MemoryError, CUDA out of memory, or torch's CPU
    allocator refusing (a RuntimeError "can't allocate memory")."""
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in _OOM_MARKERS)


def out_of_memory_reason(exc: BaseException) -> str:
    """A one-line reason from an allocation failure."""
    first = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def release_memory(device: str) -> None:
    """Return what can be returned after a failed allocation."""
    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def pass_bytes(graph: Graph, spec_rows: int, dtype: torch.dtype) -> int:
    """Memory of the smallest first bound pass: one interval pass (intervals and rounding
    allowances of every value) and one backward chunk of the spec rows over the widest value."""
    widest = max([math.prod(graph.inputs[0].shape)] + [math.prod(n.shape) for n in graph.nodes])
    backward = COEF_COPIES * max(1, spec_rows) * widest * element_size(dtype)
    params = 2 * graph.parameter_count() * element_size(dtype)  # materialised constants
    return ibp_pass_bytes(graph, 1, dtype) + backward + params


def bounds_fit(graph: Graph, spec_rows: int, device: str, dtype: torch.dtype) -> str | None:
    """None when a first bound pass fits PASS_FIT_SHARE of the memory free on ``device``;
    else the reason, in words."""
    need, free = pass_bytes(graph, spec_rows, dtype), free_bytes(device)
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
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
