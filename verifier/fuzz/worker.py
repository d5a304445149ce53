"""A reusable task process with a hard deadline per task (as verifier/bench.py runs instances):
the parent sends ``(task name, keyword arguments)``; a task that overruns its hard limit gets
the process killed and the next task a fresh one, so one hang never stops a campaign.

Tasks are the functions in ``TASKS`` of verifier/fuzz/unusual_tasks.py (imported in the child;
the torch import is paid once per process, before the first task's clock starts).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0


def _main(conn) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.ERROR)
    from verifier.fuzz.unusual_tasks import TASKS, warm_up

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


class TaskWorker:
    """One child process; ``run`` returns the task's dict, or None when it was killed."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(START_TIMEOUT_S) or self.conn.recv() != "ready":
            self.kill()
            raise RuntimeError("fuzz worker did not start")

    def run(self, name: str, hard_limit: float, **kwargs) -> tuple[dict | None, float]:
        """(answer or None if killed after ``hard_limit`` s, wall seconds seen by the parent)."""
        start = time.monotonic()
        try:
            self.conn.send((name, kwargs))
            if self.conn.poll(hard_limit):
                return self.conn.recv(), time.monotonic() - start
        except (EOFError, OSError):  # the process died (crash, out of memory)
            self.kill()
            code = self.proc.exitcode
            return ({"status": "crash", "message": f"worker died (exit code {code})"},
                    time.monotonic() - start)
        self.kill()
        return None, time.monotonic() - start

    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(5)
        except (OSError, BrokenPipeError):
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()
