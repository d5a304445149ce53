"""Freed memory kept in the process's heap for the next tensor, not handed back to the OS
after every pass.

glibc serves an allocation above its mmap threshold (32 MiB at most) with fresh pages from
mmap and unmaps them on free, so every large temporary of a bound pass (coefficients of
[domains x rows x inputs]: 45 MB on a mnistfc 256x4 search step) pays one page fault per
4 kB page when first written. Measured on this CPU, one thread: filling a fresh 45 MB float64
tensor 18.5 ms, 1.75 ms when the heap's pages are reused; ``abs`` of the coefficients in box
concretisation 20 ms vs 8 ms. PyTorch's CPU allocator has no cache of its own.

``keep_freed_pages`` (once, at import of ``bounds``) sets glibc's M_MMAP_MAX to 0 (every
allocation from the heap), M_TRIM_THRESHOLD to its maximum (the heap does not shrink on
free) and M_ARENA_MAX to 1: a thread other than the main one otherwise allocates from an
arena of its own, made of mmap'd 64 MiB heaps that these settings do not keep, and every
verification runs in such a thread (``verifier.watchdog``). Measured on oval21 base img590,
``verify --timeout 25``, two threads: 1.7-1.9M minor page faults and 3.8-4.3 s of system
time with a thread arena, 0.31M and 1.1-1.4 s with one arena; 6.1k vs 6.5-6.6k domains.
``release_freed_pages`` hands the heap's free pages back (malloc_trim, about 70 ms per GB)
in the long-lived workers that run job after job, after each answer is sent (the
service's ``server.worker.worker_main``, the bench's ``runner._worker_main``);
``retained_free_bytes`` counts what the heap holds free and resident, which the engines'
memory budget adds back (``budget.free_bytes``: those bytes count as used, yet this process
can reuse them).

A no-op off glibc, when ``NNCERT_KEEP_FREED_PAGES=0``, or when the user tunes malloc already
(``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``): their setting wins.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# glibc caps M_TRIM_THRESHOLD at the largest int mallopt takes
TRIM_THRESHOLD_MAX = 2**31 - 1
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                 "GLIBC_TUNABLES")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc():
    """The C library when it is glibc with mallinfo2 (2.33+), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _Mallinfo2
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()
_kept = False
# The heap's free bytes when its free pages were last handed back (or when keeping began):
# free bytes above this are resident. Pages leave the process only by malloc_trim here (no
# mmap'd chunks, no automatic trimming), so at most this many free bytes are not resident.
_free_at_release = 0


def keep_freed_pages() -> bool:
    """Serve every allocation from the heap and keep freed pages there (see the module's
    docstring); True when set now or before."""
    global _kept
    if _kept:
        return True
    if (_LIBC is None or os.environ.get("NNCERT_KEEP_FREED_PAGES", "1") == "0"
            or any(name in os.environ for name in USER_SETTINGS)):
        return False
    global _free_at_release
    _kept = bool(_LIBC.mallopt(M_MMAP_MAX, 0)) and bool(
        _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX))
    if _kept and "MALLOC_ARENA_MAX" not in os.environ:  # (a user's arena count wins)
        _LIBC.mallopt(M_ARENA_MAX, 1)
    _free_at_release = _heap_free()
    return _kept


def kept() -> bool:
    return _kept


def _heap_free() -> int:
    return int(_LIBC.mallinfo2().fordblks)


def release_freed_pages() -> None:
    """Hand the heap's free pages back to the OS (the next pass faults them in again)."""
    global _free_at_release
    if _kept:
        _LIBC.malloc_trim(0)
        _free_at_release = _heap_free()


def retained_free_bytes() -> int:
    """Free heap bytes certainly resident, which this process's next allocations reuse
    (0 unless kept): a lower bound (free chunks the last release handed back count as not
    resident even once reused and freed again)."""
    if not _kept:
        return 0
    return max(0, _heap_free() - _free_at_release)
