"""Falsification: look for a counterexample before any bound is computed.

Phases, for every group of regions sharing one output condition:

1. cheap points: each box's centre, its lower and upper corner, ``random_samples`` uniform
   points and a quarter as many random vertices;
2. bound-guided points (``guided.bound_vertices``, unless ``config.guided`` is off): the box
   vertices that CROWN's linear lower bounds of the spec rows point to (at most
   ``GUIDED_POINTS``, lowest linear bound first), evaluated and then each the start of a
   fine-step and a coarse-step PGD run; the bound pass gets at most ``GUIDED_SHARE`` of the
   budget left (with a budget under ``GUIDED_FIRST_MIN_S``, after the first PGD round
   instead);
3. PGD rounds (``attack_boxes``): ``restarts`` starts per box, ``steps`` steps each, the
   first start at the best point so far when no round at that step size started there yet,
   the others random (and, with several disjuncts, each descending on one target disjunct:
   ``pgd.targets``); rounds alternate coarse and fine step sizes, double their restarts while
   a round stays short (small networks run a step on a thousand points as fast as on one),
   double their steps every two rounds (up to 8 times) and run until the time budget is
   spent. PGD descends straight through steps (Sign, Floor, Round: ``OpRule.surrogate``);
   where only those surrogates give the loss a gradient (binarised or quantised nets), each
   round is followed by as long a slice of the gradient-free search below;
4. instead of PGD, when the loss has no gradient at any group's best points, nor at as many
   uniform points (a graph piecewise constant in its input: ArgMax, Cast to int,
   comparisons), the gradient-free search on onnxruntime (``blackbox.falsify_blackbox``)
   gets the rest of the budget.

Every point the IR (torch, float32) sees as a violation is re-checked with onnxruntime by
``verifier.validate``; only a validated point is returned, rejected ones are skipped.

``Falsifier`` keeps this state between calls (the pipeline attacks a run several times).
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
from dataclasses import dataclass, field

import numpy as np
import torch

from verifier.attack.blackbox import falsify_blackbox
from verifier.attack.guided import bound_vertices
from verifier.attack.objective import TorchCondition
from verifier.attack.pgd import (
    attack_boxes,
    batch_size,
    evaluate,
    float32_boxes,
    has_gradient,
    has_surrogates,
    reduce_best,
    uniform,
)
from verifier.config import AttackConfig
from verifier.onnx_import.loader import ImportedModel
from verifier.result import Counterexample
from verifier.spec.types import OutputCondition, Spec
from verifier.validate import attack_float32_box, float32_box_empty, validate_batch

log = logging.getLogger(__name__)

# Candidates re-checked with onnxruntime per group and phase (best IR loss first).
VALIDATE_PER_ROUND = 8
# PGD rounds cycle through these step-size scales: coarse steps find far corners (L-inf
# robustness), fine steps follow narrow unsafe pockets (ACAS Xu).
STEP_SCALES = (1.0, 0.1)
# PGD steps double every len(STEP_SCALES) rounds, at most this many times.
STEP_DOUBLINGS = 3
# Share of the budget left that the guided phase's bound pass may use.
GUIDED_SHARE = 0.25
# Vertices evaluated and attacked from in the guided phase.
GUIDED_POINTS = 64
# Budgets below this run the first PGD round before the guided phase (the pipeline's first
# attack has 0.5 s: on marabou-cifar10 large 6413 and small 8498 round 0 finds the
# counterexample in 0.3-0.4 s, and a guided phase first took the whole half second).
GUIDED_FIRST_MIN_S = 2.0
# Where PGD descends only through straight-through surrogates (steps on every path: binarised
# or quantised nets), each PGD round is followed by a gradient-free slice of as long, at
# least this many seconds: on random binarised CNNs the gradient-free search found
# counterexamples that the surrogate descent missed, on quantised (QDQ) nets the reverse.
STEPPED_SLICE_MIN_S = 0.25


@dataclass
class _Group:
    """Regions sharing one output condition up to its thresholds, with their float32 boxes."""

    condition: OutputCondition  # the first region's
    regions: np.ndarray  # region indices [R]
    lo: torch.Tensor  # [R, n]
    hi: torch.Tensor
    tcond: TorchCondition
    best_x: torch.Tensor | None = None  # best point so far per region
    best_loss: torch.Tensor | None = None
    restarts: int = 0  # PGD restarts per box in the next round (0: the config's)
    guided: bool = False  # the guided phase is done
    # per step scale: the best loss when the best point last started a round at that scale
    init_loss: dict[float, float] = field(default_factory=dict)


def _condition_key(cond: OutputCondition) -> tuple:
    """What regions of one group share: the condition but for its finite thresholds."""
    strict = b"" if cond.strict is None else np.asarray(cond.strict).tobytes()
    return (cond.coef.shape, cond.coef.tobytes(), np.isfinite(cond.rhs).tobytes(), strict)


def group_regions(spec: Spec, device) -> list[_Group]:
    """Group regions by output condition up to its thresholds (``TorchCondition.at``: a spec
    of 10000 boxes, each with its own output bound, spent its first attack on 20000 groups'
    cheap points one by one), each box as the float32 points nearest to it; only in strict
    mode (no box tolerance) are regions with no float32 point dropped."""
    by_key: dict[tuple, list[int]] = {}
    for r, region in enumerate(spec.regions):
        by_key.setdefault(_condition_key(region.condition), []).append(r)
    groups = []
    for members in by_key.values():
        lower = np.stack([spec.regions[r].lower for r in members])
        upper = np.stack([spec.regions[r].upper for r in members])
        empty = float32_box_empty(*attack_float32_box(lower, upper))
        if empty.any():
            log.info("%d region(s) contain no float32 point and the box tolerance is 0 "
                     "(strict); not attacked", int(empty.sum()))
        keep = np.flatnonzero(~empty)
        if len(keep) == 0:
            continue
        lo, hi = float32_boxes(lower[keep], upper[keep], device)
        conds = [spec.regions[members[r]].condition for r in keep]
        if all(np.array_equal(c.rhs, conds[0].rhs) for c in conds[1:]):
            conds = conds[:1]
        groups.append(_Group(conds[0], np.asarray(members)[keep], lo, hi,
                             TorchCondition.from_conditions(conds, device, torch.float32)))
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
    return Falsifier(model, spec, config, device, seed).run(deadline, budget_s=budget_s)


class Falsifier:
    """A falsification that keeps its state between calls: the best point per box, the PGD
    round and restart counts, whether the guided phase ran. The pipeline attacks one run
    several times (first, before branch-and-bound, last); each call goes on where the
    previous one stopped instead of repeating its cheap points and first rounds.
    ``best_loss`` is the lowest IR loss reached so far (<= 0: the IR saw a violation;
    +inf before any point was evaluated): how close the attack came."""

    def __init__(self, model: ImportedModel, spec: Spec, config: AttackConfig,
                 device: str = "cpu", seed: int = 0) -> None:
        self.model, self.spec, self.config, self.device = model, spec, config, device
        self.graph = model.graph
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.stop = -math.inf
        self.checked = 0
        self.groups: list[_Group] | None = None
        self.round = 0  # the next PGD round
        self.gradient: bool | None = None  # PGD can move (None: not known yet)
        # PGD moves only through surrogate gradients (None: not known yet)
        self.stepped: bool | None = None

    @property
    def best_loss(self) -> float:
        losses = [float(g.best_loss.min()) for g in self.groups or ()
                  if g.best_loss is not None and len(g.best_loss)]
        return min(losses, default=math.inf)

    def run(self, deadline: float, budget_s: float | None = None) -> Counterexample | None:
        """Attack until ``deadline`` (time.monotonic), for at most ``config.time_share`` of
        the time left or ``budget_s`` seconds when given."""
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            return None
        budget = remaining * self.config.time_share if budget_s is None else min(budget_s,
                                                                                  remaining)
        self.stop = now + budget
        checked = self.checked
        cex = self._phases()
        log.info("falsify: %s after %.2fs (%d candidates re-checked, best loss %.3g)",
                 "counterexample" if cex is not None else "nothing", time.monotonic() - now,
                 self.checked - checked, self.best_loss)
        return cex

    def _phases(self) -> Counterexample | None:
        if self.groups is None:
            self.groups = group_regions(self.spec, self.device)
            for group in self.groups:
                cex = self.cheap_points(group)
                if cex is not None or self.out_of_time():
                    return cex
        groups = self.groups
        if not groups:  # nothing to attack: the rounds below would spin without a group
            return None
        # a short budget (the pipeline's first attack) goes to the first PGD round first:
        # it settles most easy instances, and a CROWN pass can take all of half a second
        if self.stop - time.monotonic() >= GUIDED_FIRST_MIN_S or self.round > 0:
            cex = self.guided_phase(groups)
            if cex is not None or self.out_of_time():
                return cex
        if self.config.steps == 0 or self.config.restarts == 0:
            return None
        if self.gradient is None:
            self.gradient = any(self._has_gradient(g) for g in groups)
        if not self.gradient:
            log.info("the attack loss has no gradient at the best points: gradient-free "
                     "search on onnxruntime for the rest of the budget")
            return self._blackbox(self.stop)
        if self.stepped is None:
            # (one more gradient pass, on graphs with steps only)
            self.stepped = has_surrogates(self.graph) and not any(
                self._has_gradient(g, surrogate=False) for g in groups)
            if self.stepped:
                log.info("the attack loss has gradients only through straight-through steps: "
                         "PGD rounds alternate with gradient-free search")
        groups.sort(key=lambda g: float(g.best_loss.min()) if g.best_loss is not None else 0.0)
        while not self.out_of_time():
            started = time.monotonic()
            cex = self.guided_phase(groups) if self.round >= 1 else None
            if cex is not None or self.out_of_time():
                return cex
            for group in groups:
                cex = self.pgd_round(group, self.round)
                if cex is not None or self.out_of_time():
                    return cex
            self.round += 1
            if self.stepped:
                took = max(STEPPED_SLICE_MIN_S, time.monotonic() - started)
                cex = self._blackbox(min(self.stop, time.monotonic() + took))
                if cex is not None:
                    return cex
        return None

    def _blackbox(self, stop: float) -> Counterexample | None:
        """The gradient-free search on onnxruntime until ``stop`` (time.monotonic)."""
        return falsify_blackbox(self.model, self.spec, stop,
                                seed=int(torch.randint(1 << 30, (1,), generator=self.gen,
                                                       device=self.gen.device)))

    def _has_gradient(self, group: _Group, surrogate: bool = True) -> bool:
        """Whether PGD can move in this group: a nonzero loss gradient (``surrogate``: PGD's,
        straight through steps; else the graph's own) at the best cheap points or at as many
        uniform points (one dead point must not rule PGD out)."""
        if self.out_of_time():
            return True  # nothing to decide: the rounds below stop at once
        n = max(1, min(len(group.lo), batch_size(self.graph) // 2))
        x = torch.cat([group.best_x[:n], uniform(group.lo[:n], group.hi[:n], self.gen)])
        box = torch.arange(n, device=x.device).repeat(2)
        return has_gradient(self.graph, group.tcond.at(box), x, self.stop, surrogate)

    def _losses(self, group: _Group, x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """IR losses of the points x in the group's boxes ``box`` (+inf for those the time
        did not reach, and for NaN)."""
        loss = evaluate(self.graph, group.tcond.at(box), x, batch_size(self.graph), self.stop)
        return torch.nan_to_num(loss, nan=math.inf)

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.stop

    def cheap_points(self, group: _Group) -> Counterexample | None:
        """Centres, corners, uniform points and random vertices of every box in the group."""
        lo, hi = group.lo, group.hi
        n_box = len(lo)
        kinds = ["centre", "lower", "upper"] + ["uniform"] * self.config.random_samples
        kinds += ["vertex"] * (self.config.random_samples // 4)
        group.best_x = torch.minimum(torch.maximum(lo + 0.5 * (hi - lo), lo), hi)
        group.best_loss = torch.full((n_box,), math.inf, device=lo.device)
        per_batch = max(1, batch_size(self.graph) // n_box)
        for s in range(0, len(kinds), per_batch):
            if self.out_of_time():
                break
            x = torch.cat([self._point(kind, lo, hi) for kind in kinds[s:s + per_batch]])
            box = torch.arange(len(x), device=lo.device) % n_box
            loss = self._losses(group, x, box)
            reduce_best(group.best_x, group.best_loss, box, x, loss)
            cex = self.check(group, x, loss, box)
            if cex is not None:
                return cex
        return None

    def _point(self, kind: str, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        if kind == "uniform":
            return uniform(lo, hi, self.gen)
        if kind == "vertex":
            return torch.where(torch.rand(lo.shape, generator=self.gen, device=lo.device) < 0.5,
                               hi, lo)
        if kind == "centre":
            return torch.minimum(torch.maximum(lo + 0.5 * (hi - lo), lo), hi)
        return lo.clone() if kind == "lower" else hi.clone()

    def guided_phase(self, groups: list[_Group]) -> Counterexample | None:
        """The guided points of every group, once per group (``guided_points``)."""
        for group in groups if self.config.guided else ():
            if group.guided:
                continue
            cex = self.guided_points(group)
            if cex is not None or self.out_of_time():
                return cex
            if not group.guided:  # its bound pass did not fit: nor would the next group's
                break  # (a 99-disjunct spec logged and ran 99 failed passes per attack)
        return None

    def guided_points(self, group: _Group) -> Counterexample | None:
        """The vertices CROWN's bounds point to: evaluated, then a PGD run from each with fine
        steps (a pocket at the vertex) and one with coarse steps (a violation a little
        further in: marabou-cifar10 medium 2317 eps 0.012, found only from the vertices)."""
        now = time.monotonic()
        got = bound_vertices(self.graph, group.lo, group.hi, group.condition,
                             min(self.stop, now + GUIDED_SHARE * (self.stop - now)),
                             min(GUIDED_POINTS, batch_size(self.graph)),
                             group.tcond.rhs if group.tcond.per_region else None)
        # done once the bounds gave points, or gave none with ample time (a bound pass that
        # did not fit in a share of a half-second budget tries again in a later call)
        group.guided = got is not None or self.stop - now >= GUIDED_FIRST_MIN_S
        if got is None:
            return None
        x, box = got
        loss = self._losses(group, x, box)
        reduce_best(group.best_x, group.best_loss, box, x, loss)
        cex = self.check(group, x, loss, box)
        if cex is not None or self.out_of_time() or self.config.steps == 0:
            return cex
        for scale in reversed(STEP_SCALES):  # fine steps first: a thin pocket at the vertex
            res = attack_boxes(self.graph, group.lo[box], group.hi[box], group.tcond.at(box),
                               steps=self.config.steps, restarts=1, init=x, generator=self.gen,
                               deadline=self.stop, stop_on_any=True, step_scale=scale)
            reduce_best(group.best_x, group.best_loss, box, res.x, res.loss)
            log.debug("guided: %d vertices, step scale %g, best loss %.3g", len(x), scale,
                      float(res.loss.min()))
            cex = self.check(group, res.x, res.loss, box)
            if cex is not None or self.out_of_time():
                return cex
        return None

    def pgd_round(self, group: _Group, round_: int) -> Counterexample | None:
        """One PGD round. Restarts double each round while a round stays short; steps double
        every STEP_SCALES rounds (up to 2**STEP_DOUBLINGS times the config's: the cosine
        schedule then ends finer, where a coarse run stops just short of the unsafe set);
        the first start is the best point so far when no round at this step scale started
        from it yet."""
        start = time.monotonic()
        restarts = group.restarts or self.config.restarts
        scale = STEP_SCALES[round_ % len(STEP_SCALES)]
        steps = self.config.steps * 2 ** min(STEP_DOUBLINGS, round_ // len(STEP_SCALES))
        best = float(group.best_loss.min())
        fresh = best < group.init_loss.get(scale, math.inf)
        if fresh:
            group.init_loss[scale] = best
        res = attack_boxes(
            self.graph, group.lo, group.hi, group.tcond,
            steps=steps, restarts=restarts,
            init=group.best_x if fresh else None, generator=self.gen,
            deadline=self.stop, stop_on_any=True, step_scale=scale,
        )
        took = time.monotonic() - start
        cap = max(self.config.restarts, batch_size(self.graph) // len(group.lo))
        if took < 0.25 * (self.stop - time.monotonic()):
            group.restarts = min(cap, 2 * restarts)
        box = torch.arange(len(group.lo), device=group.lo.device)
        reduce_best(group.best_x, group.best_loss, box, res.x, res.loss)
        return self.check(group, res.x, res.loss, box)

    def check(self, group: _Group, x: torch.Tensor, loss: torch.Tensor,
              box: torch.Tensor) -> Counterexample | None:
        """Re-check the most violating candidates (IR loss <= 0) with onnxruntime;
        ``box[i]`` is the group-local box of x[i]."""
        hits = torch.nonzero(loss <= 0).flatten()
        if len(hits) == 0:
            return None
        hits = hits[torch.argsort(loss[hits])][:VALIDATE_PER_ROUND]
        xs = x[hits].detach().cpu().numpy().astype(np.float64)
        regions = group.regions[box[hits].cpu().numpy()]
        self.checked += len(hits)
        cex = validate_batch(self.model, self.spec, xs, regions)
        if cex is None:
            log.debug("%d IR violation(s) rejected by onnxruntime", len(hits))
        return cex
