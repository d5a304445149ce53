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
