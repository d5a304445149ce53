"""When the next step of a loop may start, so that the loop ends on time, not a step late.

A step starts only when SAFETY times the slowest of the last few steps still fits before the
deadline. Steps hold pieces that cannot read the clock (autograd's backward, forward passes
over a batch, splits), and they slow down when another process takes the machine's cores.
Measured overruns before this rule: cctsdb patch-1's input-split search ended 0.69 s past
120 s when only the deadline itself was checked, and TinyYOLO's last PGD attack 0.05 s past
it when the next step was predicted from the last one alone.

Used by the input-split search (its steps and the integer cells' sweep), the neuron-split
search (``neuron_options``) and PGD.
"""

from __future__ import annotations

import time
from collections import deque

# The rule's factor, and how many recent steps it looks at (searches; PGD looks at 4).
SAFETY = 1.25
HISTORY = 8


class StepTimer:
    """The durations of a loop's last steps, and whether one more fits before a deadline."""

    def __init__(self, history: int = HISTORY, safety: float = SAFETY,
                 first_guess: float = 0.0):
        """``first_guess``: seconds the first step is expected to take (0: unknown, the first
        step always starts)."""
        self.safety = safety
        self._recent: deque[float] = deque(maxlen=history)
        if first_guess > 0:
            self._recent.append(first_guess)

    def record(self, seconds: float) -> None:
        self._recent.append(seconds)

    def clear(self) -> None:
        """Forget the steps so far (the next loop's steps take their own time)."""
        self._recent.clear()

    def slowest(self) -> float:
        return max(self._recent, default=0.0)

    def fits(self, deadline: float, now: float | None = None) -> bool:
        """Whether a step started ``now`` (default: the clock) is expected to end before
        ``deadline`` (time.monotonic seconds)."""
        now = time.monotonic() if now is None else now
        return now + self.safety * self.slowest() < deadline
