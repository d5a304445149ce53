"""The attacks of a neuron-split search: when they run, from where, and the last one."""

from __future__ import annotations

import math
import time

import torch

from bounds.engine.forward import run_graph
from verifier.bab.domain_queue import DomainQueue
from verifier.bab.input_split import BabOutcome

# attack seeds kept from the latest bounded batch (worst domains first)
SEEDS = 16


class SearchAttacks:
    """Attack methods of ``NeuronSplitSearch`` (a mixin: it reads the search's ``attack``,
    ``validate``, ``schedule``, ``seeds``, ``options``, ``counters``, ``progress`` and
    ``deadline``; the primal points also its ``problem``, ``graph`` and ``input_shape``)."""

    def _primal_points(self, input_coef, bound, weight, keep) -> None:
        """Input corners minimising each open domain's weakest row; stash IR violations."""
        if input_coef is None:
            return
        masked = torch.where(weight, bound, torch.full_like(bound, math.inf))
        row = torch.argmin(masked, dim=1)
        c = input_coef[torch.arange(len(bound)), row].flatten(1)[keep]
        lo, hi = self.problem.lower.unsqueeze(0), self.problem.upper.unsqueeze(0)
        x = torch.where(c >= 0, lo, hi)
        self._check_points(x)
        if self.options.seeded_attack and len(x):  # the worst domains' first: attack seeds
            order = torch.argsort(masked[keep].min(1).values)[:SEEDS]
            self.seeds = x[order].detach()

    def _check_points(self, x: torch.Tensor) -> None:
        if len(x) == 0 or self.counters.extra.get("cex") is not None:
            return
        x = torch.maximum(torch.minimum(x.float().to(x.dtype), self.problem.upper),
                          self.problem.lower)
        with torch.no_grad():
            y = run_graph(self.graph, x.reshape(len(x), *self.input_shape))[0]
        hit = self.problem.violated(y.reshape(len(x), -1))
        if bool(hit.any()):
            cex = self.validate(x[hit])
            if cex is not None:
                self.counters.extra["cex"] = cex

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

