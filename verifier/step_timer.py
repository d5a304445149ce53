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


# A step whose work (its domains) differs from a recorded one's by the factor r is expected to
# take that step's time times max(r, FIXED_SHARE + (1 - FIXED_SHARE) r): all of it grows with
# the work, while at most FIXED_SHARE of it is taken as fixed when the work shrinks.
FIXED_SHARE = 0.5
# Steps of at least this share of the next step's work predict it (``StepTimer.slowest``).
NEAR = 0.5


class StepTimer:
    """The durations of a loop's last steps, and whether one more fits before a deadline.

    Steps may say their work (the domains a branch-and-bound step bounds): the next step is
    then predicted from each recent one scaled to the work it will do. (TinyYOLO's neuron-split
    search: its first step, one parent, bounded 32 children in 19 s; the next, 32 parents,
    64 children, started with 33 s left on the 19 s estimate and ran past the deadline.)"""

    def __init__(self, history: int = HISTORY, safety: float = SAFETY,
                 first_guess: float = 0.0):
        """``first_guess``: seconds the first step is expected to take (0: unknown, the first
        step always starts)."""
        self.safety = safety
        self._recent: deque[tuple[float, float | None]] = deque(maxlen=history)
        if first_guess > 0:
            self._recent.append((first_guess, None))
        self._guess = 0.0  # (``guess``; 0: none)

    def guess(self, seconds: float) -> None:
        """What the next step is expected to take, whatever its work, until the first one is
        recorded (unlike ``first_guess``, which stays among the recent steps): a neuron-split
        search's root, bounded as its steps bound their children. Without it the first step
        always starts, and on a VGG16-size net its set-up alone took 13 s of a search that had
        3.5 s left."""
        self._guess = seconds

    def record(self, seconds: float, work: float | None = None) -> None:
        """A step's duration and, optionally, its work (> 0)."""
        self._recent.append((seconds, work if work is None or work > 0 else None))

    def clear(self) -> None:
        """Forget the steps so far (the next loop's steps take their own time)."""
        self._recent.clear()
        self._guess = 0.0

    def slowest(self, work: float | None = None) -> float:
        """The longest recent step, each scaled to ``work`` where both say their work. Only
        the steps whose work is at least NEAR times ``work`` are scaled (or, if none is, those
        of the largest work): a step of far less work is mostly fixed cost, and scaled up
        linearly it stopped searches with most of their time left (an input-split step of 2
        domains slowed to 0.05 s by another process predicted 1.6 s for 64 domains, where
        the step of 32 before it had taken 0.01 s)."""
        if not self._recent:
            return self._guess  # (unscaled: the guess says no work)
        if work is None:
            return max(s for s, _ in self._recent)
        sized = [(s, w) for s, w in self._recent if w is not None]
        near = [(s, w) for s, w in sized if w >= NEAR * work]
        if sized and not near:
            top = max(w for _, w in sized)
            near = [(s, w) for s, w in sized if w == top]
        return max([s * scale(work / w) for s, w in near]
                   + [s for s, w in self._recent if w is None])

    def fits(self, deadline: float, now: float | None = None,
             work: float | None = None) -> bool:
        """Whether a step started ``now`` (default: the clock) doing ``work`` (None: as much
        as the recent ones) is expected to end before ``deadline`` (time.monotonic
        seconds)."""
        now = time.monotonic() if now is None else now
        return now + self.safety * self.slowest(work) < deadline


def scale(ratio: float) -> float:
    """A step's time relative to one that did 1 / ``ratio`` of its work (FIXED_SHARE)."""
    return max(ratio, FIXED_SHARE + (1.0 - FIXED_SHARE) * ratio)
