"""The attacks of a neuron-split search: when they run, from where, and the last one."""

from __future__ import annotations

import math
import time

from verifier.bab.domain_queue import DomainQueue
from verifier.bab.input_split import BabOutcome


class SearchAttacks:
    """Attack methods of ``NeuronSplitSearch`` (a mixin: it reads the search's ``attack``,
    ``validate``, ``schedule``, ``seeds``, ``options``, ``counters``, ``progress`` and
    ``deadline``)."""

    def _attack_due(self) -> bool:
        if self.schedule.due(time.monotonic() - self.progress.start):
            return True
        last = self.counters.extra.get("last_attack", self.progress.start)
        return not self.sign_only and time.monotonic() - last >= self.options.attack_every_s

    def _run_attack(self, salt: int = 0, margin: float | None = None) -> None:
        """Attack the region for the schedule's budget, from the seeds when there are any
        (``seeded_attack``), and tell the schedule how close it came."""
        start = self.counters.extra["last_attack"] = time.monotonic()
        seed = self.options.seed + 7919 * self.counters.steps + 104729 * salt
        budget = min(self.schedule.budget_s, max(0.0, self.deadline - start))
        if self.options.seeded_attack and self.seeds is not None:
            x = self.attack(seed, start + budget, starts=self.seeds)
        else:
            x = self.attack(seed, start + budget)
        self.schedule.record(getattr(self.attack, "last_loss", math.inf),
                             time.monotonic() - start, margin)
        if x is not None and len(x):
            cex = self.validate(x)
            if cex is not None:
                self.counters.extra["cex"] = cex

    def _give_up(self, queue: DomainQueue, reason: str) -> BabOutcome:
        """No proof is coming: one last attack before answering unknown."""
        for attempt in range(3 if self.attack is not None else 0):
            if self.counters.extra.get("cex") is not None or time.monotonic() >= self.deadline:
                break
            self._run_attack(attempt + 1)
        cex = self.counters.extra.get("cex")
        if cex is not None:
            return BabOutcome("sat", cex, self._stats(queue))
        return BabOutcome("unknown", stats=self._stats(queue, reason))

