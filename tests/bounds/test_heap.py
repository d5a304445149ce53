"""Freed memory kept in the heap (bounds.heap): large temporaries reuse resident pages, the
memory budget counts the heap's free bytes as this process's, and a run's end hands them
back."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from bounds import heap
from bounds.engine import budget

glibc = pytest.mark.skipif(heap._LIBC is None, reason="glibc only (the module is a no-op)")
MB = 1 << 20


@glibc
def test_freed_tensors_stay_in_the_heap_until_released():
    assert heap.kept()  # set when bounds was imported
    heap.release_freed_pages()
    assert heap.retained_free_bytes() == 0
    x = torch.empty(64 * MB // 8, dtype=torch.float64).fill_(1.0)  # above glibc's mmap cap
    del x
    assert heap.retained_free_bytes() >= 64 * MB
    heap.release_freed_pages()
    assert heap.retained_free_bytes() == 0


@glibc
def test_retained_bytes_are_resident():
    """What the heap reports kept is in the resident set: freeing 256 MB keeps RSS up by
    at least what retained_free_bytes says (no double count with MemAvailable)."""
    heap.release_freed_pages()
    rss0 = budget._proc_field("/proc/self/status", "VmRSS")
    x = torch.empty(256 * MB // 8, dtype=torch.float64).fill_(1.0)
    del x
    kept = heap.retained_free_bytes()
    rss1 = budget._proc_field("/proc/self/status", "VmRSS")
    assert kept >= 256 * MB
    assert rss1 - rss0 >= kept - 8 * MB  # page-rounding and torch's own small allocations
    heap.release_freed_pages()
    rss2 = budget._proc_field("/proc/self/status", "VmRSS")
    assert rss2 < rss1 - 200 * MB


def test_free_bytes_counts_the_heaps_free_memory(monkeypatch):
    monkeypatch.setattr(heap, "retained_free_bytes", lambda: 0)
    monkeypatch.setattr(budget, "_proc_field",
                        lambda path, key: {"MemAvailable": 8 << 30, "VmRSS": 3 << 30}.get(key))
    budget.set_host_limit(4 << 30)
    try:
        base = budget.free_bytes("cpu")
        assert base == 1 << 30  # the job's limit less its resident set
        monkeypatch.setattr(heap, "retained_free_bytes", lambda: 512 * MB)
        assert budget.free_bytes("cpu") == base + 512 * MB
    finally:
        budget.set_host_limit(None)


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc settings")
@pytest.mark.parametrize("env", [{"NNCERT_KEEP_FREED_PAGES": "0"}, {"MALLOC_MMAP_MAX_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_a_users_setting_wins(env):
    code = "import bounds, bounds.heap as h; print(h.kept(), h.retained_free_bytes())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "0"]
