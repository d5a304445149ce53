"""The campaign's task process: ``verifier.bench.Worker`` (a reusable process with a hard deadline
per task) running named tasks. The parent sends ``(task name, keyword arguments)``; a task that
overruns its hard limit gets the process killed and the next task a fresh one, so one hang never
stops a campaign.

Tasks are the functions in ``TASKS`` of fuzzing/unusual_tasks.py (imported in the child; the
torch import is paid once per process, before the first task's clock starts).
"""

from __future__ import annotations

import logging
import os
import time

from verifier.bench import Worker

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0


def _main(conn) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.ERROR)
    from fuzzing.unusual_tasks import TASKS, warm_up

    warm_up()
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, kwargs = msg
        try:
            conn.send(TASKS[name](**kwargs))
        except Exception as exc:  # noqa: BLE001 - the parent records it; the worker lives on
            conn.send({"status": "crash", "message": f"{type(exc).__name__}: {exc}"})


class TaskWorker(Worker):
    """One child process running named tasks; ``run`` also returns the parent's wall time."""

    def __init__(self) -> None:
        super().__init__(START_TIMEOUT_S, target=_main)

    def run(self, name: str, hard_limit: float, **kwargs) -> tuple[dict | None, float]:
        """(answer or None if killed after ``hard_limit`` s, wall seconds seen by the parent)."""
        start = time.monotonic()
        answer = super().run((name, kwargs), hard_limit)
        return answer, time.monotonic() - start

    def died(self, code: int | None) -> dict:
        return {"status": "crash", "message": f"worker died (exit code {code})"}
