"""Freed memory kept in the heap (bounds.heap): large temporaries reuse resident pages, the
memory budget counts the heap's free bytes as this process's, and a release hands them
back. The heap checks run in a fresh process: a test process's heap may hold free chunks
from earlier tests that a new allocation reuses (then, rightly, nothing counts as retained:
the estimate is a lower bound)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from bounds import heap
from bounds.engine import budget

glibc = pytest.mark.skipif(heap._LIBC is None, reason="glibc only (the module is a no-op)")
MB = 1 << 20

FRESH_HEAP = """
import torch
from bounds import heap
from bounds.engine.budget import proc_field
MB = 1 << 20
rss = lambda: proc_field("/proc/self/status", "VmRSS")
assert heap.kept()
heap.release_freed_pages()
assert heap.retained_free_bytes() == 0
rss0 = rss()
x = torch.empty(256 * MB // 8, dtype=torch.float64).fill_(1.0)  # above glibc's mmap cap
del x
kept, rss1 = heap.retained_free_bytes(), rss()
assert kept >= 256 * MB, kept
assert rss1 - rss0 >= kept - 8 * MB, (rss0, rss1, kept)  # what counts as kept is resident
heap.release_freed_pages()
assert heap.retained_free_bytes() == 0
rss2 = rss()
assert rss2 < rss1 - 200 * MB
# after a release, what counts as retained is still resident (a lower bound on it)
y = torch.empty(128 * MB // 8, dtype=torch.float64).fill_(1.0)
del y
assert rss() - rss2 >= heap.retained_free_bytes() - 8 * MB
print("ok")
"""


# the same in a thread other than the main one, as every verification runs
# (verifier.watchdog): without one arena for all threads, that thread's own arena handed
# the pages back
IN_A_THREAD = """
import threading
import torch
from bounds import heap
MB = 1 << 20
heap.release_freed_pages()
kept = []
def work():
    x = torch.empty(256 * MB // 8, dtype=torch.float64).fill_(1.0)
    del x
    kept.append(heap.retained_free_bytes())
t = threading.Thread(target=work)
t.start()
t.join()
assert kept[0] >= 256 * MB, kept
print("ok")
"""


@glibc
@pytest.mark.parametrize("code", [FRESH_HEAP, IN_A_THREAD], ids=["main", "thread"])
def test_freed_tensors_stay_resident_until_released(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]


def test_free_bytes_counts_the_heaps_free_memory(monkeypatch):
    monkeypatch.setattr(heap, "retained_free_bytes", lambda: 0)
    monkeypatch.setattr(budget, "proc_field",
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
