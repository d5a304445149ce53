"""Per-caller rate limits: one token bucket per API key (per client address without keys).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; each request
takes one. An empty bucket answers with the seconds until a token is back (``Retry-After``).
Buckets live in memory: a restart forgets them, which only ever lets a caller in sooner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_BUCKETS = 10_000


class RateLimiter:
    """Token buckets keyed by caller identity."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, identity: str) -> float:
        """Take a token for ``identity``: 0.0 when allowed, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[identity] = (tokens - 1.0, now)
                self._prune(now)
                return 0.0
            self._buckets[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they equal a fresh one) once there are many."""
        if len(self._buckets) <= MAX_BUCKETS:
            return
        full = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
