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
