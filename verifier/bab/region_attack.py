"""Attacks on a region's box for the branch-and-bound searches (candidate counterexamples)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def region_attack(graph, region, steps: int, restarts: int, device) -> Callable:
    """``attack(seed, deadline)`` for a search: PGD with fresh random restarts on the region
    box; returns the points the IR sees as violations (to be validated) or None."""
    from verifier.attack import attack_boxes

    def attack(seed: int, deadline: float) -> torch.Tensor | None:
        gen = torch.Generator(device=device).manual_seed(seed)
        res = attack_boxes(graph, region.lower[None], region.upper[None], region.condition,
                           steps, restarts, generator=gen, deadline=deadline, stop_on_any=True)
        hit = res.loss <= 0
        return res.x[hit] if bool(hit.any()) else None

    return attack


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
