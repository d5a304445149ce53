"""Attacks on a region's box for the branch-and-bound searches (candidate counterexamples)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# Seeded starts (from the search's bounds) run with fine steps first: they start next to where
# the linear bounds say the minimum is, and coarse steps would jump out of a thin pocket there;
# then with coarse steps (a violation a little further in: falsify's guided phase found
# marabou-cifar10 medium 2317 eps 0.012 only so).
SEED_STEP_SCALE = 0.1


class RegionAttack:
    """``attack(seed, deadline, starts=None)`` for a neuron-split search: PGD on the region
    box from ``starts`` [M, d] (points the search's bounds point to) and from the best point
    of the previous call (one fine-step run each, then one coarse-step run when the fine ones
    found nothing), and from fresh random restarts when the seeds found nothing.
    Returns the points the IR sees as violations (to be validated) or None; ``last_loss``
    is the lowest IR loss reached in the last call (<= 0: a violation in the IR; the search
    reads it to judge how promising attacking is)."""

    def __init__(self, graph, region, steps: int, restarts: int, device) -> None:
        self.graph, self.region = graph, region
        self.steps, self.restarts, self.device = steps, restarts, device
        self.best_x: torch.Tensor | None = None  # [d] float32, best point so far
        self.last_loss = math.inf

    def __call__(self, seed: int, deadline: float,
                 starts: torch.Tensor | None = None) -> torch.Tensor | None:
        from verifier.attack import attack_boxes
        from verifier.attack.pgd import float32_boxes

        gen = torch.Generator(device=self.device).manual_seed(seed)
        lo, hi = float32_boxes(self.region.lower[None], self.region.upper[None], self.device)
        seeds = self._seeds(starts, lo, hi)
        hits, losses = [], []
        for scale in (SEED_STEP_SCALE, 1.0) if seeds is not None else ():
            m = len(seeds)
            res = attack_boxes(self.graph, lo.expand(m, -1), hi.expand(m, -1),
                               self.region.condition, self.steps, 1, init=seeds,
                               generator=gen, deadline=deadline, stop_on_any=True,
                               step_scale=scale)
            hits.append(res.x[res.loss <= 0])
            losses.append(res)
            if len(hits[-1]):
                break
        if not any(len(h) for h in hits):
            res = attack_boxes(self.graph, lo, hi, self.region.condition, self.steps,
                               self.restarts, generator=gen, deadline=deadline,
                               stop_on_any=True)
            hits.append(res.x[res.loss <= 0])
            losses.append(res)
        self._remember(losses)
        found = torch.cat(hits) if hits else torch.empty(0)
        return found if len(found) else None

    def _seeds(self, starts, lo, hi) -> torch.Tensor | None:
        parts = [] if starts is None else [starts.to(lo)]
        if self.best_x is not None:
            parts.append(self.best_x[None])
        if not parts:
            return None
        return torch.minimum(torch.maximum(torch.cat(parts), lo), hi)

    def _remember(self, results) -> None:
        self.last_loss = math.inf
        for res in results:
            i = int(torch.argmin(res.loss))
            loss = float(res.loss[i])
            if loss < self.last_loss:
                self.last_loss, self.best_x = loss, res.x[i].detach().clone()


def region_attack(graph, region, steps: int, restarts: int, device) -> RegionAttack:
    """The neuron-split search's attack on ``region`` (see :class:`RegionAttack`)."""
    return RegionAttack(graph, region, steps, restarts, device)


def box_attack(graph, region, steps: int, restarts: int, seed: int = 0) -> Callable:
    """``attack(lower, upper, salt, deadline, full_batch=False)`` for input splitting: PGD
    inside each of the sub-boxes ``lower/upper [N, d]`` (float64; snapped inward to float32
    boxes) with ``restarts`` random starts each, or with ``full_batch`` as many as one PGD
    pass holds; returns the points the IR sees as violations (to be validated) or None. The
    generator seed mixes the run's ``seed`` with the call's ``salt``."""
    from verifier.attack import attack_boxes
    from verifier.attack.pgd import batch_size

    def attack(lower: torch.Tensor, upper: torch.Tensor, salt: int, deadline: float,
               full_batch: bool = False) -> torch.Tensor | None:
        gen = torch.Generator(device=lower.device).manual_seed(seed * 1_000_003 + salt)
        starts = batch_size(graph) // len(lower) if full_batch else restarts
        res = attack_boxes(graph, lower.cpu().numpy(), upper.cpu().numpy(), region.condition,
                           steps, max(restarts, starts), generator=gen, deadline=deadline,
                           stop_on_any=True)
        hit = res.loss <= 0
        return res.x[hit] if bool(hit.any()) else None

    return attack
