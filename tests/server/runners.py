"""Stand-in job runners for worker tests (imported by name inside spawned workers)."""

from __future__ import annotations

import os
import time


def crash(task: dict, progress) -> dict:
    """The worker process dies mid-job."""
    os._exit(3)


def boom(task: dict, progress) -> dict:
    raise RuntimeError("boom")


def sleepy(task: dict, progress) -> dict:
    """Runs far past any timeout, reporting progress."""
    for i in range(600):
        progress({"step": i})
        time.sleep(0.1)
    return {"verdict": "unknown"}


def stepper(task: dict, progress) -> dict:
    """A quick stand-in for verify(): progress for about a second, then a verdict read off the
    spec (the test specs ask for Y_0 >= 3.0 (unsat) or Y_0 >= 1.5 (sat))."""
    for i in range(4):
        progress({"step": i, "domains": 4 - i})
        time.sleep(0.35)
    with open(task["spec_path"]) as f:
        unsat = ">= Y_0 3.0" in f.read()
    cex = None if unsat else {"x": [1.0, 0.5], "y": [1.5]}
    return {"verdict": "unsat" if unsat else "sat", "counterexample": cex, "time_s": 1.4,
            "method": "stub", "message": ""}


def hog(task: dict, progress) -> dict:
    """Touches memory 32 MiB at a time up to 2 GiB, then idles: past any small memory limit."""
    held = []
    for i in range(64):
        held.append(b"\x01" * (32 << 20))
        progress({"mib": 32 * (i + 1)})
        time.sleep(0.01)
    time.sleep(60)
    return {"verdict": "unknown"}


_KEPT: list[bytes] = []


def leaky(task: dict, progress) -> dict:
    """Keeps 256 MiB alive after it returns; the message is the worker's pid."""
    _KEPT.append(b"\x01" * (256 << 20))
    return {"verdict": "unknown", "message": str(os.getpid())}


def gpu_probe(task: dict, progress) -> dict:
    """Reports the GPUs Ray gave the task and the worker's pid (in the message, as JSON)."""
    import json

    import ray

    info = {"gpus": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid(),
            "device": task["device"]}
    return {"verdict": "unknown", "message": json.dumps(info)}


def abandons(task: dict, progress) -> dict:
    """Like verify() when a stage overruns: the watchdog answers at a short deadline and the
    stage keeps running in its thread; the message is the worker's pid."""
    import threading

    from verifier.watchdog import Abandoned, run_until

    forever = threading.Event()
    ran = run_until(time.monotonic() + 0.2, forever.wait)
    assert isinstance(ran, Abandoned)
    return {"verdict": "timeout", "message": str(os.getpid())}


def quick(task: dict, progress) -> dict:
    """A verdict at once."""
    return {"verdict": "unknown", "counterexample": None, "time_s": 0.0, "method": "stub",
            "message": ""}
