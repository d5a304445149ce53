"""The optimisation loop of alpha-CROWN and beta-CROWN: projected gradient ascent (Adam) on
relaxation parameters, keeping the best bound seen per domain and spec row.

Every parameter in its allowed range gives a sound bound, so the loop only ever tightens: it
returns the best bound of all passes, and per (domain, row) the parameters that gave it (warm
starts for later calls).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from bounds.engine.adam import Adam
from bounds.engine.deadline import check_deadline, step_fits


@dataclass(frozen=True)
class Group:
    """Parameters optimised with one step size, each projected onto its range after a step:
    ``ranges[key]`` = (low, high), (0, inf) where a key is missing."""

    params: Mapping[str, torch.Tensor]
    lr: float
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def project(self) -> None:
        with torch.no_grad():
            for key, p in self.params.items():
                low, high = self.ranges.get(key, (0.0, math.inf))
                p.clamp_(low, high)


@dataclass(frozen=True)
class Schedule:
    """How long to optimise: ``iterations`` bound passes at most; the step sizes decay by
    ``decay`` per step; ``stop(best)`` ends early; no step that would end past ``deadline``
    (nor past the engines' deadline). ``weight`` [B, S] (0/1): the rows whose sum is
    maximised (None: all)."""

    iterations: int
    decay: float = 1.0
    stop: Callable[[torch.Tensor], bool] | None = None
    deadline: float = math.inf
    weight: torch.Tensor | None = None


def _keep_best(best: dict, current: Mapping, improved: torch.Tensor) -> None:
    if not bool(improved.any()):
        return
    every = bool(improved.all())  # (the usual case: a copy, not a masked select)
    for k, v in current.items():
        if every:
            best[k] = v.detach().clone()
            continue
        mask = improved.reshape(*improved.shape, *([1] * (v.dim() - 2)))
        best[k] = torch.where(mask, v.detach(), best[k])


def _objective(lower: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return -(lower if weight is None else torch.where(weight > 0, lower, 0)).sum()


def maximize(bound: Callable[[], torch.Tensor], groups: list[Group], schedule: Schedule,
             best: torch.Tensor | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Best ``bound()`` [B, S] over the groups' parameters (leaf tensors that ``bound`` reads)
    and, per group, the parameters that gave it. ``best``: a bound already known (its
    parameters: the groups' starting values)."""
    active = [(list(g.params.values()), g.lr) for g in groups if g.params]
    optimizer = Adam(active, decay=schedule.decay) if active else None
    kept = [{k: v.detach().clone() for k, v in g.params.items()} for g in groups]
    for it in range(max(1, schedule.iterations)):
        check_deadline()
        began = time.monotonic()
        lower = bound()
        pass_s = time.monotonic() - began
        detached = lower.detach()
        improved = torch.ones_like(detached, dtype=torch.bool) if best is None \
            else detached > best
        best = detached.clone() if best is None else torch.maximum(best, detached)
        for g, k in zip(groups, kept, strict=True):
            _keep_best(k, g.params, improved)
        if (it + 1 >= schedule.iterations or optimizer is None or not lower.requires_grad
                or (schedule.stop is not None and schedule.stop(best))
                or time.monotonic() >= schedule.deadline):
            break  # (no parameter reaches the bound when it needs no gradient)
        if not step_fits(pass_s, schedule.deadline):  # the best so far is a sound bound
            check_deadline()  # (unless the pass itself ran past the engines' deadline)
            break
        optimizer.zero_grad()
        _objective(lower, schedule.weight).backward()
        optimizer.step()
        for g in groups:
            g.project()
    return best, kept
