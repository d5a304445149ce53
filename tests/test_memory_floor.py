"""The memory floor: below FLOOR_SHARE of the machine's memory available, a process stops
growing (its next large allocation fails inside it, an ``unknown`` answer) instead of the
kernel killing one of the processes that share the machine. Each check runs in a child
process: resource limits are process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, check=True, cwd=ROOT)
    return out.stdout.strip()


def _allocate(elements: int) -> str:
    """Child-process lines that allocate ``elements`` float64s and print "recognised" when
    that fails with an error ``is_out_of_memory`` knows ("allocated" when it succeeds)."""
    return f"""
        try:
            torch.empty({elements}, dtype=torch.float64)
        except Exception as exc:
            print("recognised" if is_out_of_memory(exc) else f"other {{exc!r}}")
        else:
            print("allocated")
    """


def test_the_process_cap_turns_a_huge_allocation_into_an_error():
    """After cap_process_memory, a 64 GiB tensor fails with an error is_out_of_memory
    recognises (the kernel would otherwise kill the process)."""
    out = _run("""
        import torch
        from verifier.memory_guard import cap_process_memory, is_out_of_memory
        assert cap_process_memory(0.05) is not None
    """ + _allocate(8 << 30))
    assert out == "recognised"


def test_below_the_floor_the_limit_drops_to_what_the_process_holds_and_comes_back():
    out = _run("""
        import resource
        from bounds.engine.budget import data_bytes
        from verifier.memory_guard import FLOOR_SLACK, MemoryFloor, cap_process_memory
        cap = cap_process_memory(0.5)
        machine = {"available": 10 << 30}
        floor = MemoryFloor(1 << 30, cap, available=lambda: machine["available"])
        soft = lambda: resource.getrlimit(resource.RLIMIT_DATA)[0]
        floor.check()
        print(floor.clamped, soft() == cap)
        machine["available"] = 512 << 20  # another process took the machine's memory
        floor.check()
        print(floor.clamped, soft() <= data_bytes() + FLOOR_SLACK, floor.clamps)
        machine["available"] = (3 << 30) // 2  # above the floor, below twice it: still held
        floor.check()
        print(floor.clamped)
        machine["available"] = 4 << 30  # the other process is gone
        floor.check()
        print(floor.clamped, soft() == cap, floor.clamps)
    """)
    assert out.splitlines() == ["False True", "True True 1", "True", "False True 1"]


def test_a_clamped_process_fails_a_large_allocation_with_an_error_the_pipeline_knows():
    """The floor's own thread clamps (an injected reader says the machine is nearly full);
    then a 1 GiB tensor, which the cap alone leaves room for, fails with an error
    ``is_out_of_memory`` recognises. (No 1 GiB tensor is made before the clamp: freed into
    the heap, its pages would count in the clamped limit and serve the second one.)"""
    out = _run("""
        import time, torch
        from bounds.engine.budget import data_bytes
        from verifier.memory_guard import MemoryFloor, cap_process_memory, is_out_of_memory
        cap = cap_process_memory(0.5)
        assert cap - data_bytes() > 2 << 30  # room for the tensor under the cap
        floor = MemoryFloor(1 << 30, cap, available=lambda: 100 << 20, interval=0.01).start()
        for _ in range(200):
            if floor.clamped:
                break
            time.sleep(0.01)
    """ + _allocate(1 << 27))
    assert out == "recognised"


def test_the_guard_starts_once_per_process():
    out = _run("""
        import threading
        from verifier.memory_guard import guard_process_memory
        first = guard_process_memory()
        print(first is not None and guard_process_memory() is first,
              sum(t.name == "memory-floor" for t in threading.enumerate()))
    """)
    assert out == "True 1"


def test_any_runtime_error_at_the_memory_limit_counts_as_out_of_memory():
    """Under the floor, oneDNN refused a convolution's allocation with "could not create a
    primitive" (carvana beside a process holding the machine's memory): the run answered
    `error` (internal) instead of `unknown` (out of memory). At the limit, a RuntimeError is an
    allocation failure whatever its words; away from it, only the known words count."""
    out = _run("""
        from verifier.memory_guard import MemoryFloor, cap_process_memory, is_out_of_memory
        cap = cap_process_memory(0.5)
        machine = {"available": 10 << 30}
        floor = MemoryFloor(1 << 30, cap, available=lambda: machine["available"])
        onednn = RuntimeError("could not create a primitive")
        print(is_out_of_memory(onednn))
        machine["available"] = 100 << 20
        floor.check()
        print(is_out_of_memory(onednn), is_out_of_memory(ValueError("could not")))
        machine["available"] = 4 << 30
        floor.check()
        print(is_out_of_memory(onednn))
    """)
    assert out.splitlines() == ["False", "True False", "False"]
