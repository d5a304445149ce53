"""Branch-and-bound by splitting the input box (for low-dimensional inputs).

Domains are sub-boxes held as stacked tensors. Each step bounds a batch of the worst-bounded
domains at once, drops those whose every disjunct is refuted, looks for a real counterexample at
the centres of the rest (every few steps also by PGD inside the most promising ones, and
within a time share by PGD on the whole region), and bisects each remaining domain. After
bounding, each open domain is clipped to the part of its box where its rows' linear lower
bounds still allow a violation (input_clip.py).

Children inherit their parent's intermediate linear bounds, whose concretisation over the
child box tightens its intervals before CROWN (fewer unstable neurons to refine), while the
queue's copies of them fit a memory budget; the queue keeps domains in slots (slot_queue.py)
so that taking the worst ones does not copy all the others.

Which dimension to bisect: the one whose width contributes most to the bound (|linear
coefficient| x width, the coefficient floored relative to the row's largest: split_dims).
Inputs the network reads only as integers (a cast to int, e.g. a patch position) are bisected
at an integer, and no longer once one integer's values are left (integer_split.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from bounds.engine.analysis import relaxed_inputs
from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.rules.tangents import DomainError
from bounds.types import Interval, LinearBounds
from verifier.bab.input_clip import clip_boxes, concretize_min
from verifier.bab.integer_split import (
    integer_cells,
    integer_dims,
    integer_done,
    integer_open,
    split_points,
)
from verifier.bab.memory import memory_budget
from verifier.bab.problem import RegionProblem
from verifier.bab.progress import Progress
from verifier.bab.slot_queue import SlotQueue
from verifier.memory_guard import halved_after_out_of_memory, is_out_of_memory
from verifier.step_timer import StepTimer

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class InputSplitOptions:
    # domains bounded per step (fewer where the model's size and the memory available ask
    # for it: batch_size)
    batch: int = 2048
    batch_max_bytes: int = 2 << 30
    max_domains: int = 2_000_000
    # The split dimension scores |a_i| x width_i with |a_i| floored at this fraction of the
    # row's largest |a_j| (see split_dims)
    sensitivity_floor: float = 0.05
    clip: bool = True  # shrink domains to where the linear bounds allow a violation
    bounds: BoundOptions = BoundOptions(method="crown")
    # PGD inside the worst domains every few steps (counterexamples in small regions that the
    # domain centres and the opening attack miss)
    attack_every: int = 4
    attack_domains: int = 32
    attack_max_s: float = 0.5
    # PGD on the whole region box (a batch of starts, at most attack_max_s a time) while its
    # time stays within this share of the search's: a counterexample in a pocket that the
    # domains have not isolated yet (ACAS Xu 1_9 prop_7: nothing refuted in 116 s of
    # splitting, the opening attack too short to find the pocket)
    region_attack_share: float = 0.1
    # Children carry their parent's intermediate linear bounds (concretised over the child's
    # box before CROWN: fewer unstable neurons to refine), until the queue's copies of them
    # exceed inherit_max_bytes (~30 KB per domain on ACAS Xu; capped at a quarter of the
    # memory available when the search starts)
    inherit: bool = True
    inherit_max_bytes: int = 4 << 30
    # A box free only in integer inputs (integer_split.py) holding at most this many
    # combinations of integers is cut into one cell per combination (the network reads one
    # value there), whose centres are swept for a violation in batches of cell_batch; the
    # cells are then the search's first domains: the leaves of integer bisection without
    # its inner nodes
    integer_cells: int = 20_000
    cell_batch: int = 64


@dataclass
class Domains:
    """Stacked sub-boxes with their bound margin and already refuted disjuncts."""

    lower: torch.Tensor  # [N, d]
    upper: torch.Tensor
    margin: torch.Tensor  # [N], smaller = further from a proof
    refuted: torch.Tensor  # [N, D] bool
    # intermediate linear bounds inherited from the parent (valid on the sub-box), or None
    lin: dict[str, LinearBounds] | None = None

    def __len__(self) -> int:
        return self.lower.shape[0]

    def select(self, idx) -> Domains:
        lin = None if self.lin is None else {k: v.select(idx) for k, v in self.lin.items()}
        return Domains(self.lower[idx], self.upper[idx], self.margin[idx], self.refuted[idx],
                       lin)

    def fields(self) -> dict[str, torch.Tensor]:
        out = {"lower": self.lower, "upper": self.upper, "refuted": self.refuted}
        for name, rec in (self.lin or {}).items():
            for part in _LINEAR_PARTS:
                out[f"lin/{name}/{part}"] = getattr(rec, part)
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, torch.Tensor], margin: torch.Tensor) -> Domains:
        lin: dict[str, dict] = {}
        for key, t in fields.items():
            if key.startswith("lin/"):
                name, part = key[len("lin/"):].rsplit("/", 1)  # value names may hold "/"
                lin.setdefault(name, {})[part] = t
        return cls(fields["lower"], fields["upper"], margin, fields["refuted"],
                   {k: LinearBounds(**v) for k, v in lin.items()} or None)


_LINEAR_PARTS = ("a_lo", "c_lo", "a_hi", "c_hi")


def _merge_linear(new: dict[str, LinearBounds],
                  old: dict[str, LinearBounds] | None) -> dict[str, LinearBounds]:
    """Per position, the fresh linear bound where there is one, else the inherited one (both
    valid on the domain: the inherited one on a box containing it)."""
    if not old:
        return new
    out = dict(old)
    for name, rec in new.items():
        prev = old.get(name)
        if prev is None:
            out[name] = rec
            continue
        lo, hi = torch.isfinite(rec.c_lo), torch.isfinite(rec.c_hi)
        out[name] = LinearBounds(torch.where(lo.unsqueeze(-1), rec.a_lo, prev.a_lo),
                                 torch.where(lo, rec.c_lo, prev.c_lo),
                                 torch.where(hi.unsqueeze(-1), rec.a_hi, prev.a_hi),
                                 torch.where(hi, rec.c_hi, prev.c_hi))
    return out


def _nothing_known(field: str) -> float:
    """Queue fill for a domain without inherited linear bounds: a = 0, c = -inf / +inf (the
    interval they give, (-inf, inf), constrains nothing)."""
    if field.endswith("c_lo"):
        return -float("inf")
    if field.endswith("c_hi"):
        return float("inf")
    return 0.0


class DomainQueue:
    """Queued input-split domains (slot storage, see slot_queue.py), worst-bounded first."""

    def __init__(self, first: Domains):
        self.slots = SlotQueue(fill=_nothing_known)
        self.push(first)

    def __len__(self) -> int:
        return len(self.slots)

    def push(self, dom: Domains) -> None:
        self.slots.push(dom.fields(), dom.margin)

    def take_worst(self, n: int) -> Domains:
        fields, margin = self.slots.pop_smallest(n)
        return Domains.from_fields(fields, margin)

    def linear_bytes(self) -> int:
        return self.slots.nbytes("lin/")

    def drop_linear(self) -> None:
        self.slots.drop([k for k in self.slots.fields if k.startswith("lin/")])


@dataclass
class BabOutcome:
    verdict: str  # "unsat" | "sat" | "unknown" | "timeout"
    counterexample: object | None = None  # validated by the caller's validator
    stats: dict = field(default_factory=dict)


def split_dims(input_coef: torch.Tensor | None, lower, upper, problem, refuted,
               root_width: torch.Tensor, floor: float = 0.0,
               done: torch.Tensor | None = None) -> torch.Tensor:
    """Per domain [N], the dimension to bisect: the one the linear bound is most sensitive
    to (|coef| x width summed over open rows); the widest relative to the region where no
    coefficient reached the input.

    |coef| x width alone is blind to relaxation looseness (unstable neurons), which
    shrinking a wide dimension reduces: the linear bound can have a near-zero coefficient on
    a dimension whose width drives the unstable neurons (ACAS Xu 3_3 prop_2: |a| ~ 1e-4 on the
    one dimension left wide, a 0.008 gap between the bound and the true minimum on boxes tiny
    in every other dimension). Each |a_i| is therefore floored at ``floor`` x the row's
    largest |a_j| (alpha-beta-CROWN floors it at an absolute 0.01; relative to the row the
    floor does not depend on the scale of the outputs). With the floor, two earlier aids only
    cost time and were removed: a first phase choosing by a cheap look-ahead (ACAS Xu, 186
    instances, 116 s cap: 521.7 s in all with it, 347.6 s without) and strong branching
    against the widest dimension (3_3 prop_2: a quarter of the domains bounded in 35 s).
    ``done`` [N, d] marks dimensions whose splitting cannot change the bound (integer inputs
    down to one integer): they count as zero width.
    """
    width = upper - lower
    if done is not None:
        width = torch.where(done, torch.zeros_like(width), width)
    if input_coef is None:
        return torch.argmax(width / root_width, dim=1)
    coef = input_coef.flatten(2).abs()  # [B, S, d]
    if floor > 0:
        coef = torch.maximum(coef, floor * coef.amax(-1, keepdim=True))
    open_rows = (~refuted).repeat_interleave(problem.n_rows, dim=1)  # [B, S]
    sens = (coef * open_rows.unsqueeze(-1)).sum(1) * width
    sens = torch.where(width > 0, sens, torch.full_like(sens, -1.0))
    return torch.argmax(sens, dim=1)


# Bytes one domain's bound needs, per activation and input dimension: float64 lower and upper
# coefficients, with room for the copies the engine makes between layers.
BYTES_PER_ACTIVATION_DIM = 64


def batch_size(graph, options: InputSplitOptions) -> int:
    """``options.batch`` domains, fewer where their CROWN coefficients (one per activation
    and input dimension) would not fit the memory budget."""
    d = math.prod(graph.inputs[0].shape)
    activations = sum(math.prod(node.shape) for node in graph.nodes)
    per_domain = BYTES_PER_ACTIVATION_DIM * (d + 1) * max(activations, 1)
    return max(1, min(options.batch, memory_budget(options.batch_max_bytes) // per_domain))


def bisect(domains: Domains, dims: torch.Tensor, integer: torch.Tensor | None = None
           ) -> Domains:
    """Each domain halved along its dimension ``dims``: at the midpoint, or at an integer
    where the dimension is an ``integer`` input holding several integers' values."""
    rows = torch.arange(len(domains), device=dims.device)
    lo, hi = domains.lower[rows, dims], domains.upper[rows, dims]
    split_int = torch.zeros_like(lo, dtype=torch.bool)
    if integer is not None and integer.numel():
        split_int = integer_open(domains.lower, domains.upper, integer)[rows, dims]
    left, right = split_points(lo, hi, split_int)
    left_upper = domains.upper.clone()
    left_upper[rows, dims] = left
    right_lower = domains.lower.clone()
    right_lower[rows, dims] = right
    lin = None if domains.lin is None else {
        k: v.select(torch.cat([rows, rows])) for k, v in domains.lin.items()}
    return Domains(torch.cat([domains.lower, right_lower]), torch.cat([left_upper, domains.upper]),
                   domains.margin.repeat(2), domains.refuted.repeat(2, 1), lin)


@dataclass
class _Bounded:
    lower: torch.Tensor  # [N, S] lower bounds of row value - rhs
    refuted: torch.Tensor  # [N, D]
    input_coef: torch.Tensor | None  # [N, S, *input] the rows' CROWN input coefficients
    linear_c: torch.Tensor | None  # [N, S] constants of the rows' linear lower bounds
    linear_bounds: dict | None = None  # the values' linear bounds (``record_linear``)

    def joined(self, other: _Bounded) -> _Bounded:
        """Both batches' bounds, in order (linear records dropped: the children of a batch
        that had to be cut do not inherit them)."""
        def cat(a, b):
            return None if a is None or b is None else torch.cat([a, b])

        return _Bounded(torch.cat([self.lower, other.lower]),
                        torch.cat([self.refuted, other.refuted]),
                        cat(self.input_coef, other.input_coef), cat(self.linear_c, other.linear_c))


class InputSplitSearch:
    def __init__(self, graph, problem: RegionProblem, deadline: float,
                 options: InputSplitOptions, progress: Progress, validate, attack=None):
        """``validate(x [N, d] float32 tensor)`` returns a checked counterexample or None;
        ``attack(lower, upper, salt, deadline, full_batch)`` (region_attack.box_attack)
        returns candidate points inside the given sub-boxes or None."""
        self.graph, self.problem, self.deadline = graph, problem, deadline
        self.options, self.progress, self.validate = options, progress, validate
        self.attack, self.steps = attack, 0
        self.start = time.monotonic()
        # a step (and a batch of the integer cells' sweep) starts only when it fits
        self.step_timer = StepTimer()
        self.region_attack_s = 0.0  # time spent on whole-region attacks
        self.input_shape = graph.inputs[0].shape
        self.clipped_away = 0  # domains the clip emptied
        self.batch = batch_size(graph, options)
        self.out_of_memory_steps = 0  # steps whose bound ran out of memory (batch halved)
        self.integer = integer_dims(graph).to(problem.lower.device)
        self.cell_stats: dict = {}
        # value -> shape in the graph bound_spec runs (Softmax expanded: its linear-bound
        # records name values that self.graph lacks)
        self.value_shapes: dict[str, tuple[int, ...]] = {}

    def bound(self, dom: Domains, record_linear: bool = False) -> _Bounded:
        """The batch's bounds. Where an interval leaves an op's domain (DomainError: a
        Reciprocal or Log over a box too wide for IBP to keep its input positive) the batch
        is bounded in halves, and a domain that fails alone gets no bound (-inf): the search
        splits it until its intervals stay inside. Where the network itself leaves the
        domain (not finite at the failing box's centre: a Log of a negative base), splitting
        cannot help and the error stands."""
        try:
            return self._bound_batch(dom, record_linear)
        except DomainError:
            if len(dom) == 1:
                if not self._finite_at_centre(dom):
                    raise
                lower = torch.full((1, self.problem.coef.shape[0]), -math.inf,
                                   dtype=dom.lower.dtype, device=dom.lower.device)
                return _Bounded(lower, dom.refuted.clone(), None, None)
            half = len(dom) // 2
            idx = torch.arange(len(dom), device=dom.lower.device)
            return self.bound(dom.select(idx[:half])).joined(self.bound(dom.select(idx[half:])))

    def _finite_at_centre(self, dom: Domains) -> bool:
        x = (dom.lower + dom.upper) / 2
        with torch.no_grad():
            y = run_graph(self.graph, x.reshape(len(dom), *self.input_shape))[0]
        return bool(torch.isfinite(y).all())

    def _bound_batch(self, dom: Domains, record_linear: bool) -> _Bounded:
        shape, p = self.input_shape, self.problem
        n = len(dom)
        box = Interval(dom.lower.reshape(n, *shape), dom.upper.reshape(n, *shape))
        given = None
        if dom.lin is not None:  # the parent's linear bounds over this box: fewer unstable
            given = {k: v.concretize(dom.lower, dom.upper, self.value_shapes[k])
                     for k, v in dom.lin.items()}
        res = bound_spec(self.graph, box, p.coef.unsqueeze(0), p.rhs.unsqueeze(0),
                         self.options.bounds, given=given, record_linear=record_linear)
        if record_linear and not self.value_shapes:
            self.value_shapes = {n.name: n.shape for n in res.intermediates.graph.nodes}
        # L_s(x) = a_s . x + c_s <= row value - rhs on the box (CROWN's bound before concretising)
        linear_c = None
        if res.linear_lower is not None and res.input_coef is not None:
            a = res.input_coef.flatten(2)
            linear_c = res.linear_lower - concretize_min(a, dom.lower, dom.upper)
        return _Bounded(res.lower, dom.refuted | p.refuted_disjuncts(res.lower),
                        res.input_coef, linear_c, res.intermediates.linear_bounds)

    def clip_keep(self, dom: Domains, a: torch.Tensor | None,
                  c: torch.Tensor | None) -> torch.Tensor | None:
        """Shrink the domains' boxes (in place) to where a violation is still possible;
        returns the mask of domains left non-empty (None: all of them)."""
        if not self.options.clip or a is None or c is None or not len(dom):
            return None
        lo, hi = clip_boxes(dom.lower, dom.upper, a.flatten(2), c, self.problem.n_disjuncts,
                            dom.refuted)
        keep = (lo <= hi).all(1)
        dom.lower = torch.where(keep.unsqueeze(1), lo, dom.lower)
        dom.upper = torch.where(keep.unsqueeze(1), hi, dom.upper)
        return None if bool(keep.all()) else keep

    def find_violation(self, dom: Domains) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Centres (rounded to float32, kept in the box) the IR says violate the property,
        and every centre's violation loss (<= 0: violated)."""
        x = ((dom.lower + dom.upper) / 2).float()
        x = torch.minimum(torch.maximum(x, dom.lower.float()), dom.upper.float())
        with torch.no_grad():
            y = run_graph(self.graph, x.reshape(len(dom), *self.input_shape).to(dom.lower))[0]
        loss = self.problem.violation_loss(y.reshape(len(dom), -1))
        hit = loss <= 0
        return (x[hit] if hit.any() else None), loss

    def run(self) -> BabOutcome:
        """Branch-and-bound from the root until the deadline (verdict timeout then)."""
        p = self.problem
        dev = p.lower.device
        first = Domains(p.lower.unsqueeze(0), p.upper.unsqueeze(0),
                        torch.full((1,), -float("inf"), device=dev),
                        torch.zeros((1, p.n_disjuncts), dtype=torch.bool, device=dev))
        cells = integer_cells(p.lower, p.upper, self.integer, self.options.integer_cells)
        if cells is not None:
            first = self.sweep_cells(*cells)
            if isinstance(first, BabOutcome):
                return first
        queue = DomainQueue(first)
        done = 0
        inherit_budget = memory_budget(self.options.inherit_max_bytes)
        inherit = self.options.inherit and self._records_fit(inherit_budget)
        while len(queue):
            # (a step's work is the domains it bounds: the batch fills up as the queue
            # grows, and each step doubled its predecessor's time while the last one's
            # duration alone was the estimate; an unusual-model case, 3074 disjuncts, ran
            # past its 2 s deadline)
            work = min(self.batch, len(queue))
            if not self.step_timer.fits(self.deadline, work=work):
                return BabOutcome("timeout", stats=self._stats(done, queue))
            began = time.monotonic()
            outcome = self._step(queue, inherit, inherit_budget, done)
            self.step_timer.record(time.monotonic() - began, work)
            if isinstance(outcome, BabOutcome):
                return outcome
            done, inherit = outcome
        return BabOutcome("unsat", stats=self._stats(done, queue))

    def _records_fit(self, budget: int) -> bool:
        """Whether one batch's children could carry linear bounds within ``budget`` bytes:
        a record is [domains, positions, input size] per refined value, so inheriting only
        pays on low-dimensional inputs. (cctsdb's patch-1, 12296 inputs, asked for a 2.4 GB
        record of one cell and ran out of memory, or past its deadline building it.)"""
        d = math.prod(self.input_shape)
        positions = sum(math.prod(self.graph.shape_of(v)) for v in relaxed_inputs(self.graph))
        # a_lo and a_hi in float64, for two children of each domain of the batch
        need = 2 * 2 * 8 * d * positions * self.batch
        if need > budget:
            log.info("input split: children do not inherit linear bounds (%.1f GB a batch, "
                     "%.1f GB budget)", need / 2**30, budget / 2**30)
            return False
        return True

    def _step(self, queue: DomainQueue, inherit: bool, inherit_budget: int, done: int):
        """One step: bound the worst batch, look for violations in it, split what stays open.
        Returns the outcome when the search ends here, else (domains done, inherit)."""
        p = self.problem
        batch = queue.take_worst(self.batch)
        parent_lin = batch.lin
        try:
            res = self.bound(batch, record_linear=inherit)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(batch) <= 1:
                raise
            queue.push(batch)  # bounded again, in smaller batches
            self.batch = halved_after_out_of_memory(len(batch), exc,
                                                    str(self.problem.lower.device), "input split")
            self.out_of_memory_steps += 1
            return done, inherit
        open_ = ~res.refuted.all(1)
        done += len(batch)
        coef = res.input_coef[open_] if res.input_coef is not None else None
        batch = Domains(batch.lower[open_], batch.upper[open_],
                        p.margin(res.lower[open_], res.refuted[open_]), res.refuted[open_])
        before = len(batch)
        kept = self.clip_keep(batch, coef, None if res.linear_c is None
                              else res.linear_c[open_])
        batch = batch.select(kept) if kept is not None else batch
        if coef is not None and kept is not None:
            coef = coef[kept]
        self.clipped_away += before - len(batch)
        self.progress.update(done, len(queue) + 2 * len(batch),
                             float(batch.margin.min()) if len(batch) else None)
        if not len(batch):
            return done, inherit
        candidates, centre_loss = self.find_violation(batch)
        if candidates is None and self._attack_due():
            candidates = self.attack_promising(batch, centre_loss)
        if candidates is None and self._region_attack_due():
            candidates = self.attack_region()
        if candidates is not None:
            cex = self.validate(candidates)
            if cex is not None:
                return BabOutcome("sat", cex, self._stats(done, queue))
        if len(queue) + 2 * len(batch) > self.options.max_domains:
            return BabOutcome("unknown", stats=self._stats(done, queue, "domain budget"))
        linear_bounds = res.linear_bounds
        if inherit and linear_bounds is not None:
            lin = _merge_linear(linear_bounds, parent_lin)
            lin = {k: v.select(open_) for k, v in lin.items()}
            if kept is not None:
                lin = {k: v.select(kept) for k, v in lin.items()}
            children_bytes = 2 * sum(t.numel() * t.element_size() for rec in lin.values()
                                     for t in vars(rec).values())
            if queue.linear_bytes() + children_bytes > inherit_budget:
                log.info("input split: %d domains queued, children stop inheriting "
                         "linear bounds (memory budget)", len(queue))
                inherit = False
                queue.drop_linear()
            batch.lin = lin if inherit else None
        done_dims = (integer_done(batch.lower, batch.upper, self.integer)
                     if self.integer.numel() else None)
        queue.push(bisect(batch, split_dims(
            coef, batch.lower, batch.upper, p, batch.refuted, p.upper - p.lower,
            self.options.sensitivity_floor, done_dims), self.integer))
        return done, inherit

    def sweep_cells(self, lower: torch.Tensor, upper: torch.Tensor) -> Domains | BabOutcome:
        """The integer cells (integer_split.integer_cells) as the search's first domains, after
        a sweep of their centres in batches: sat at the first centre that violates the
        property (validated), timeout at the deadline. (Cells are bounded by the search's
        own method: IBP on a cell of a deep network blows up on the float32 widening of the
        fixed inputs alone, cctsdb's patch-1 gives [-inf, inf].)"""
        p, step = self.problem, self.options.cell_batch
        self.cell_stats = {"integer_cells": len(lower), "cells_swept": 0}
        cells = Domains(lower, upper, torch.full((len(lower),), -float("inf"),
                                                 dtype=lower.dtype, device=lower.device),
                        torch.zeros((len(lower), p.n_disjuncts), dtype=torch.bool,
                                    device=lower.device))
        for start in range(0, len(lower), step):
            if not self.step_timer.fits(self.deadline):
                return BabOutcome("timeout", stats=self.cell_stats)
            began = time.monotonic()
            batch = cells.select(torch.arange(start, min(start + step, len(lower)),
                                              device=lower.device))
            candidates, _ = self.find_violation(batch)
            self.cell_stats["cells_swept"] += len(batch)
            cex = self.validate(candidates) if candidates is not None else None
            self.step_timer.record(time.monotonic() - began)
            if cex is not None:
                return BabOutcome("sat", cex, self.cell_stats)
        self.step_timer.clear()  # (the search's steps take their own time)
        return cells

    def _attack_due(self) -> bool:
        self.steps += 1
        return self.attack is not None and self.steps % self.options.attack_every == 0

    def attack_promising(self, batch: Domains, centre_loss: torch.Tensor) -> torch.Tensor | None:
        """PGD (a short time slice) inside the batch's most promising domains: the
        ``attack_domains`` worst-bounded, and half as many whose centre comes closest to a
        violation (a small violating region can sit in a domain whose bound is not among
        the worst)."""
        k = self.options.attack_domains
        pick = torch.cat([torch.argsort(batch.margin)[:k],
                          torch.argsort(centre_loss)[: k // 2]]).unique()
        return self._attack_slice(batch.lower[pick], batch.upper[pick])

    def _attack_slice(self, lower, upper, full_batch: bool = False) -> torch.Tensor | None:
        """The attack on the boxes for at most ``attack_max_s``."""
        stop = min(self.deadline, time.monotonic() + self.options.attack_max_s)
        return self.attack(lower, upper, self.steps, stop, full_batch=full_batch)

    def _region_attack_due(self) -> bool:
        """Due once the search's time pays for a whole attack within the share."""
        if self.attack is None or self.options.region_attack_share <= 0:
            return False
        elapsed = time.monotonic() - self.start
        spend = self.region_attack_s + self.options.attack_max_s
        return spend <= self.options.region_attack_share * elapsed

    def attack_region(self) -> torch.Tensor | None:
        """PGD from a full batch of starts on the whole region box."""
        began = time.monotonic()
        try:
            return self._attack_slice(self.problem.lower[None], self.problem.upper[None],
                                      full_batch=True)
        finally:
            self.region_attack_s += time.monotonic() - began

    def _stats(self, done: int, queue: DomainQueue, reason: str = "") -> dict:
        stats = {"domains_bounded": done, "domains_queued": len(queue),
                 "domains_clipped_away": self.clipped_away,
                 "region_attack_s": round(self.region_attack_s, 3), **self.cell_stats}
        if self.out_of_memory_steps:
            stats["out_of_memory_steps"] = self.out_of_memory_steps
        if reason:
            stats["stopped"] = reason
        return stats
