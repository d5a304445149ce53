"""The memory-limit helpers: RSS from /proc and the in-process watchdog (no worker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from server_util import SPEC_UNSAT

from server.memory import (
    MIB,
    MemoryWatchdog,
    child_pids,
    family_rss_bytes,
    limit_message,
    over_limit,
    rss_bytes,
)


def test_rss_of_this_process_and_of_a_missing_one():
    rss = rss_bytes()
    assert rss is not None and 10 * MIB < rss < 64 * 1024 * MIB
    assert rss_bytes(os.getpid()) is not None
    assert rss_bytes(2**22 + 12345) is None  # above pid_max: never a process


def test_over_limit():
    assert over_limit(None, 1) and not over_limit(None, 10**7)
    assert not over_limit(None, 0) and not over_limit(None, None)  # no limit
    assert not over_limit(2**22 + 12345, 1)  # gone: nothing to enforce
    assert limit_message(300) == "memory limit of 300 MiB exceeded"


def test_watchdog_fires_once_past_the_limit():
    fired = threading.Event()
    seen: list[int] = []

    def exceeded(limit: int) -> None:
        seen.append(limit)
        fired.set()

    with MemoryWatchdog(1, exceeded, interval=0.01):
        assert fired.wait(5)
    assert seen == [1]
    quiet = threading.Event()
    with MemoryWatchdog(10**7, lambda _: quiet.set(), interval=0.01):
        assert not quiet.wait(0.1)
    with MemoryWatchdog(0, lambda _: quiet.set(), interval=0.01) as dog:
        assert dog._thread is None  # no limit: no thread


def test_release_memory_returns_freed_heap():
    from server.memory import release_memory

    chunks = [bytearray(b"\x01" * 100_000) for _ in range(2000)]  # ~200 MB of small blocks
    before = rss_bytes()
    del chunks
    release_memory()
    assert rss_bytes() < before - 100 * MIB


def test_the_jobs_limit_reaches_the_engines(monkeypatch, tmp_path):
    """run_verification hands the job's memory_mb to the engines' budget (set_host_limit):
    the bound passes and the search's queue size themselves to what the watchdog allows;
    a job without a limit runs with none."""
    import bounds.engine.budget as budget
    from server.worker import run_verification

    seen = []

    def fake_verify(model, spec, config, progress=None):
        seen.append(budget._host_limit)
        raise RuntimeError("stop here")

    monkeypatch.setattr("verifier.pipeline.verify", fake_verify)
    monkeypatch.setattr(budget, "_host_limit", None)
    spec = tmp_path / "s.vnnlib"
    spec.write_text(SPEC_UNSAT)
    task = {"timeout": 5.0, "method": "auto", "device": "cpu", "model_path": "m.onnx",
            "spec_path": str(spec)}
    for memory_mb in (512, 0, None, 4096):
        try:
            run_verification({**task, "memory_mb": memory_mb}, lambda event: None)
        except RuntimeError:
            pass
    assert seen == [512 << 20, None, None, 4096 << 20]


def test_a_worker_hands_heap_pages_back_after_each_answer(monkeypatch):
    """Between jobs a worker returns the heap's free pages (bounds.heap), after the job's
    answer is sent: trimming costs about 70 ms per GB, off the job's clock."""
    import multiprocessing as mp

    import bounds.heap
    from server.worker import worker_main

    events = []

    class Logged:  # the worker's end of the pipe, logging what it sends
        def __init__(self, conn):
            self.conn = conn

        def send(self, message):
            events.append(("send", message[0]))
            self.conn.send(message)

        def recv(self):
            return self.conn.recv()

    parent, child = mp.Pipe()
    monkeypatch.setattr(bounds.heap, "release_freed_pages", lambda: events.append("release"))
    for job in ("a", "b"):
        parent.send((job, {}))
    parent.send(None)
    worker_main(Logged(child), "tests.server.runners:quick")
    assert events == [("send", "ready"), ("send", "result"), "release",
                      ("send", "result"), "release"]


def test_a_jobs_child_processes_count_towards_its_limit():
    """A job's MILP solver runs in a child process (``verifier.milp.highs_run``): its memory is
    the job's too."""
    code = ("import sys, time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); "
            "print('ready', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        assert child.pid in child_pids()
        with_child = family_rss_bytes() // MIB  # (the test process may have other children)
        assert with_child - 100 > rss_bytes() // MIB + 200
        assert over_limit(os.getpid(), with_child - 100)
        child.kill()
        child.wait()
        assert not over_limit(os.getpid(), with_child - 100)
    finally:
        child.kill()
