"""When a neuron-split search attacks, and for how long: a share that follows the promise.

After every attack the search reports the attack's best IR loss ``L`` (>= 0 when it found
nothing: how far the best point is from the unsafe set) and its own worst open margin ``m``
(<= 0: how far the weakest domain's lower bound is from a proof). The true minimum lies in
[m, L]. When the attack is much closer to a violation than the bounds are to a proof
(``L <= PROMISING_RATIO * |m|``) or its loss keeps dropping, attacks come twice as often and
get more time (up to ``MAX_BUDGET_S``); otherwise half as often (down to every
``MAX_EVERY_FACTOR`` times the configured interval) with less time. Attacks never take more
than ``MAX_SHARE`` of the search's elapsed time, so a hopeless attack cannot starve the proof.
``adaptive=False`` keeps the fixed interval and budget (the ablation baseline). Either way
the first step attacks (from the root's seeds), unless the run's own attack before the search
(``prior``) already looked hopeless: then the first attack waits one interval like the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROMISING_RATIO = 0.25  # attack loss below this share of the bound gap: promising
IMPROVED = 0.9  # a loss below this share of the previous best counts as progress
MIN_BUDGET_S, MAX_BUDGET_S = 0.5, 6.0
MAX_EVERY_FACTOR = 4
MAX_SHARE = 0.5


@dataclass
class AttackSchedule:
    """Attack interval (in search steps) and time budget, adapted after every attack."""

    every: int  # configured steps between attacks
    budget_s: float = 2.0
    adaptive: bool = True
    spent_s: float = 0.0
    best_loss: float = math.inf
    _interval: int = 0
    _since: int = 0

    def __post_init__(self) -> None:
        self.every = max(1, self.every)
        self._interval = self.every
        # the first step attacks: from the root's seeds, before the first interval (a 30 s
        # instance whose BaB made 4 steps never attacked: cora_2024 mnist-trades img15)
        self._since = self._interval - 1

    @property
    def interval(self) -> int:
        return self._interval

    def due(self, elapsed_s: float) -> bool:
        """Called once per search step: True when this step should attack."""
        self._since += 1
        if self._since < self._interval:
            return False
        if self.adaptive and self.spent_s > MAX_SHARE * max(elapsed_s, 1e-9):
            return False  # over its share: wait (the counter keeps it due)
        self._since = 0
        return True

    def prior(self, loss: float, margin: float | None) -> None:
        """What the run's attack before this search reached (IR loss ``loss``) against the
        cascade's worst margin ``margin``. A hopeless one (not ``close``) takes back the first
        step's attack: on ERAN ReLU 9x200 idx 6453 (loss 4.7, margin -0.03) that attack was
        0.44 of the search's 0.6 s, and the proof came in the first step."""
        if not self.adaptive or not math.isfinite(loss):
            return
        self.best_loss = min(self.best_loss, loss)
        if not _close(loss, margin):
            self._since = 0

    def record(self, loss: float, took_s: float, margin: float | None) -> None:
        """Account for an attack that reached IR loss ``loss`` in ``took_s`` seconds while
        the search's worst open margin was ``margin`` (None: nothing queued)."""
        self.spent_s += took_s
        if not self.adaptive:
            return
        improved = math.isfinite(self.best_loss) and loss < IMPROVED * self.best_loss
        close = _close(loss, margin)
        self.best_loss = min(self.best_loss, loss)
        if close or improved:
            self._interval = max(1, self._interval // 2)
            self.budget_s = min(MAX_BUDGET_S, 1.5 * self.budget_s)
        else:
            self._interval = min(MAX_EVERY_FACTOR * self.every, 2 * self._interval)
            self.budget_s = max(MIN_BUDGET_S, self.budget_s / 1.5)


def _close(loss: float, margin: float | None) -> bool:
    """The attack came much closer to a violation than the bounds to a proof."""
    gap = abs(margin) if margin is not None and margin < 0 else 0.0
    return math.isfinite(loss) and gap > 0 and loss <= PROMISING_RATIO * gap
