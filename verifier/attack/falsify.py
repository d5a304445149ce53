"""Falsification: look for a counterexample before any bound is computed.

Phases, for every group of regions sharing one output condition:

1. cheap points: each box's centre, its lower and upper corner, ``random_samples`` uniform
   points and a quarter as many random vertices;
2. PGD rounds (``attack_boxes``): ``restarts`` starts per box, ``steps`` steps each, the first
   start of the first round at the best cheap point; later rounds use fresh random starts and
   run until the time budget is spent.

Every point the IR (torch, float32) sees as a violation is re-checked with onnxruntime by
``verifier.validate``; only a validated point is returned, rejected ones are skipped.

Time: ``falsify`` gets the pipeline's absolute ``deadline`` (time.monotonic). It spends at most
``config.time_share`` of the remaining time, unless ``budget_s`` is given (the pipeline passes the
whole remaining time when the method is attack-only). Results are deterministic given ``seed``
(a torch.Generator drives all randomness), apart from how far the search gets before time runs
out.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from verifier.attack.objective import TorchCondition
from verifier.attack.pgd import attack_boxes, batch_size, evaluate, float32_boxes, uniform
from verifier.config import AttackConfig
from verifier.onnx_import.loader import ImportedModel
from verifier.result import Counterexample
from verifier.spec.types import OutputCondition, Spec
from verifier.validate import float32_box, float32_box_empty, validate_batch

log = logging.getLogger(__name__)

# Candidates re-checked with onnxruntime per group and phase (best IR loss first).
VALIDATE_PER_ROUND = 8


@dataclass
class _Group:
    """Regions sharing one output condition, with their float32 boxes."""

    condition: OutputCondition
    regions: np.ndarray  # region indices [R]
    lo: torch.Tensor  # [R, n]
    hi: torch.Tensor
    tcond: TorchCondition
    best_x: torch.Tensor | None = None  # best cheap point per region
    best_loss: torch.Tensor | None = None


def _condition_key(cond: OutputCondition) -> tuple:
    return (cond.coef.shape, cond.coef.tobytes(), cond.rhs.tobytes())


def group_regions(spec: Spec, device) -> list[_Group]:
    """Group regions by equal output condition; regions with no float32 point are dropped."""
    by_key: dict[tuple, list[int]] = {}
    for r, region in enumerate(spec.regions):
        by_key.setdefault(_condition_key(region.condition), []).append(r)
    groups = []
    for members in by_key.values():
        lower = np.stack([spec.regions[r].lower for r in members])
        upper = np.stack([spec.regions[r].upper for r in members])
        empty = float32_box_empty(*float32_box(lower, upper))
        if empty.any():
            log.info("%d region(s) contain no float32 point; not attacked", int(empty.sum()))
        keep = np.flatnonzero(~empty)
        if len(keep) == 0:
            continue
        lo, hi = float32_boxes(lower[keep], upper[keep], device)
        cond = spec.regions[members[0]].condition
        groups.append(_Group(cond, np.asarray(members)[keep], lo, hi,
                             TorchCondition.from_condition(cond, device, torch.float32)))
    return groups


def falsify(
    model: ImportedModel,
    spec: Spec,
    deadline: float,
    config: AttackConfig,
    device: str = "cpu",
    seed: int = 0,
    *,
    budget_s: float | None = None,
) -> Counterexample | None:
    """Search for an input violating ``spec``; returns an onnxruntime-validated Counterexample
    or None (none found within the budget: this proves nothing)."""
    now = time.monotonic()
    remaining = deadline - now
    if remaining <= 0:
        return None
    budget = remaining * config.time_share if budget_s is None else min(budget_s, remaining)
    stop = now + budget
    gen = torch.Generator(device=device).manual_seed(seed)
    search = _Search(model, spec, config, stop, gen)
    cex = search.run(group_regions(spec, device))
    log.info("falsify: %s after %.2fs (%d candidates re-checked)",
             "counterexample" if cex is not None else "nothing", time.monotonic() - now,
             search.checked)
    return cex


class _Search:
    """One falsification run: shared state for the phases."""

    def __init__(self, model, spec, config: AttackConfig, stop: float, gen) -> None:
        self.model, self.spec, self.config = model, spec, config
        self.graph = model.graph
        self.stop, self.gen = stop, gen
        self.checked = 0

    def run(self, groups: list[_Group]) -> Counterexample | None:
        for group in groups:
            cex = self.cheap_points(group)
            if cex is not None or self.out_of_time():
                return cex
        if self.config.steps == 0 or self.config.restarts == 0:
            return None
        groups.sort(key=lambda g: float(g.best_loss.min()) if g.best_loss is not None else 0.0)
        first = True
        while not self.out_of_time():
            for group in groups:
                cex = self.pgd_round(group, first)
                if cex is not None or self.out_of_time():
                    return cex
            first = False
        return None

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.stop

    def cheap_points(self, group: _Group) -> Counterexample | None:
        """Centres, corners, uniform points and random vertices of every box in the group."""
        lo, hi = group.lo, group.hi
        n_box = len(lo)
        fixed = [lo + 0.5 * (hi - lo), lo, hi]
        n_uniform = self.config.random_samples
        n_vertex = n_uniform // 4
        chunk = batch_size(self.graph)
        best_x = torch.minimum(torch.maximum(fixed[0], lo), hi)
        best_loss = torch.full((n_box,), math.inf, device=lo.device)
        for k in range(len(fixed) + n_uniform + n_vertex):
            if self.out_of_time():
                break
            if k < len(fixed):
                x = torch.minimum(torch.maximum(fixed[k], lo), hi)
            elif k < len(fixed) + n_uniform:
                x = uniform(lo, hi, self.gen)
            else:
                bits = torch.rand(lo.shape, generator=self.gen, device=lo.device) < 0.5
                x = torch.where(bits, hi, lo)
            loss = torch.nan_to_num(evaluate(self.graph, group.tcond, x, chunk), nan=math.inf)
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_x[better] = x[better]
            if bool((loss <= 0).any()):
                cex = self.check(group, x, loss)
                if cex is not None:
                    return cex
        group.best_x, group.best_loss = best_x, best_loss
        return None

    def pgd_round(self, group: _Group, first: bool) -> Counterexample | None:
        res = attack_boxes(
            self.graph, group.lo, group.hi, group.tcond,
            steps=self.config.steps, restarts=self.config.restarts,
            init=group.best_x if first else None, generator=self.gen,
            deadline=self.stop, stop_on_any=True,
        )
        if group.best_loss is not None:
            group.best_loss = torch.minimum(group.best_loss, res.loss)
        return self.check(group, res.x, res.loss)

    def check(self, group: _Group, x: torch.Tensor, loss: torch.Tensor) -> Counterexample | None:
        """Re-check the most violating candidates (IR loss <= 0) with onnxruntime."""
        hits = torch.nonzero(loss <= 0).flatten()
        if len(hits) == 0:
            return None
        hits = hits[torch.argsort(loss[hits])][:VALIDATE_PER_ROUND]
        xs = x[hits].detach().cpu().numpy().astype(np.float64)
        regions = group.regions[hits.cpu().numpy()]
        self.checked += len(hits)
        cex = validate_batch(self.model, self.spec, xs, regions)
        if cex is None:
            log.debug("%d IR violation(s) rejected by onnxruntime", len(hits))
        return cex
