"""Branch-and-bound progress: rate-limited log lines on stderr and an optional callback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("nncert.bab")

ProgressCallback = Callable[[dict], None]


class Progress:
    """Reports domains done/queued, the current global bound and elapsed time."""

    def __init__(self, callback: ProgressCallback | None = None, every_s: float = 1.0,
                 label: str = ""):
        self.callback, self.every_s, self.label = callback, every_s, label
        self.start = time.monotonic()
        self._last = -float("inf")

    def update(self, done: int, queued: int, global_bound: float | None,
               force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        event = {"stage": self.label, "domains_done": done, "domains_queued": queued,
                 "global_bound": global_bound, "elapsed_s": round(now - self.start, 3)}
        log.info("bab %s: done=%d queued=%d bound=%s elapsed=%.1fs", self.label, done, queued,
                 "n/a" if global_bound is None else f"{global_bound:.4g}", now - self.start)
        if self.callback is not None:
            self.callback(event)
