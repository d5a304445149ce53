"""Batched projected gradient descent over many input boxes at once.

``attack_boxes`` is the entry point shared by falsification and branch-and-bound: every box gets
``restarts`` starting points (the first at ``init`` when given; the rest uniform in the box,
or for half of them on random faces: start_points), each takes signed-gradient steps on the
objective of ``objective.TorchCondition`` with a cosine-decaying step size, and is projected
back onto the box after every step. The loss is hinged at
``-margin`` so points go slightly past the boundary of the unsafe set, far enough that float32
rounding differences between our IR and onnxruntime do not undo the violation, and then stop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bounds.graph import Graph
from bounds.registry import rules
from verifier.attack import pass_time
from verifier.attack.objective import TorchCondition, graph_outputs, sample_bytes
from verifier.spec.types import OutputCondition
from verifier.step_timer import StepTimer
from verifier.validate import attack_float32_box

# Step sizes as fractions of the box width: cosine decay from STEP_MAX to STEP_MIN.
STEP_MAX = 0.2
STEP_MIN = 0.002
# Target depth below zero, relative to 1 + max |output|.
MARGIN_REL = 1e-5
# Memory for one forward+backward batch.
BATCH_BYTES = 256 << 20
MAX_BATCH = 4096
PUSH_ALL = True
# Share of PGD starts placed on random faces of the box, and the probability that each of
# their coordinates sits at a bound (half lower, half upper). Over a wide box the extremes of
# a piecewise-linear network often lie on its faces: on ACAS Xu 1_9 prop_7 the violating
# inputs lie within about 1% of four faces; 2M uniform points held 2 of them, 20k face
# points about 45 (falsify found it in 1 s for 16 of 16 seeds, against 0 of 20 in 0.5 s
# and 1 of 10 in 2 s with uniform starts only).
FACE_SHARE = 0.5
FACE_PROB = 0.5


@dataclass(frozen=True)
class AttackResult:
    """Best point found per box (inside the float32 box) and its IR loss (<= 0: violation)."""

    x: torch.Tensor  # [B, n]
    loss: torch.Tensor  # [B]


# A step starts only when step_timer.SAFETY times the slowest of the last RECENT_STEPS steps
# is left (``verifier.step_timer``); a run's first step is predicted from the graph's recent
# batches (``pass_time``), so a run that starts just before its deadline does not end a whole
# step after it.
RECENT_STEPS = 4
# Points of the first forward pass on a graph never timed: its cost is unknown.
PROBE_POINTS = 8

def float32_boxes(lower: np.ndarray, upper: np.ndarray, device, dtype=torch.float32):
    """torch versions of ``validate.attack_float32_box`` (the float32 points nearest to the
    real box, or inside it in strict mode) for [B, n] float64 numpy bounds."""
    lo, hi = attack_float32_box(lower, upper)
    return (torch.as_tensor(lo, device=device, dtype=dtype),
            torch.as_tensor(hi, device=device, dtype=dtype))


def batch_size(graph: Graph) -> int:
    """Samples per forward+backward pass so that one pass stays within BATCH_BYTES."""
    return int(max(1, min(MAX_BATCH, BATCH_BYTES // sample_bytes(graph))))


def evaluate(graph: Graph, cond: TorchCondition, x: torch.Tensor, chunk: int,
             deadline: float = math.inf) -> torch.Tensor:
    """IR loss [B] of the points x [B, n], in chunks of at most ``chunk``, without gradients
    (``cond``: one for all points, or theirs, ``TorchCondition.at``).

    A chunk starts only when it is expected to end before ``deadline`` (``pass_time``; a
    graph never timed gets a probe of PROBE_POINTS first); points not reached get +inf.
    """
    loss = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    s = 0
    with torch.no_grad():
        while s < len(x):
            n = min(chunk, len(x) - s)
            if not pass_time.known(graph):
                n = min(n, PROBE_POINTS)
            n = pass_time.affordable(graph, "forward", n, deadline)
            if n == 0:
                break
            start = time.monotonic()
            loss[s:s + n] = cond.rows(s, s + n).loss(graph_outputs(graph, x[s:s + n]))
            pass_time.record(graph, "forward", n, time.monotonic() - start)
            s += n
    return loss


def _step_fraction(t: int, steps: int, scale: float = 1.0) -> float:
    cosine = 0.5 * (1.0 + math.cos(math.pi * t / max(1, steps)))
    return scale * (STEP_MIN + (STEP_MAX - STEP_MIN) * cosine)


def pgd(
    graph: Graph,
    cond: TorchCondition,
    x: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    steps: int,
    deadline: float = math.inf,
    stop_on_any: bool = False,
    step_scale: float = 1.0,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run PGD from x [B, n] in boxes lo/hi [B, n]; returns the best points and their losses.

    Stops early once every sample (or, with ``stop_on_any``, some sample) is below -margin,
    or when the next step would end after ``deadline`` (time.monotonic): a step starts only
    when step_timer.SAFETY times the slowest recent step is still left, so the attack ends on time,
    not a step late.
    Step sizes are ``step_scale`` times the default schedule (fractions of the box width).
    ``target`` [B]: the disjunct each sample descends on (-1: all; ``TorchCondition.loss``);
    the losses returned are over all disjuncts either way.
    """
    width = hi - lo
    best_x, best_loss = x.clone(), torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    timer = StepTimer(RECENT_STEPS, first_guess=pass_time.predict(graph, "step", len(x)))
    for t in range(steps + 1):
        now = time.monotonic()
        if not timer.fits(deadline, now):
            break
        x = x.detach().requires_grad_(True)
        y = graph_outputs(graph, x, surrogate=True)
        loss = cond.loss(y)
        with torch.no_grad():
            better = loss < best_loss
            best_x[better], best_loss[better] = x[better], loss[better]
            margin = MARGIN_REL * (1.0 + y.abs().amax(dim=1))
            deep = best_loss <= -margin
            if (deep.any() if stop_on_any else deep.all()) or t == steps:
                break
        hinged = torch.maximum(cond.loss(y, push_all=PUSH_ALL, target=target), -margin)
        if not hinged.requires_grad:  # the loss does not depend on x here: nothing to follow
            break
        (grad,) = torch.autograd.grad(hinged.sum(), x)
        with torch.no_grad():
            x = x - _step_fraction(t, steps, step_scale) * width * torch.sign(grad)
            x = torch.minimum(torch.maximum(x, lo), hi)
        last = time.monotonic() - now
        timer.record(last)
        pass_time.record(graph, "step", len(x), last)
    return best_x.detach(), best_loss.detach()


def has_surrogates(graph: Graph) -> bool:
    """Whether some node of ``graph`` descends through a straight-through surrogate (a step:
    ``OpRule.surrogate``)."""
    registry = rules()
    return any(registry.get(node.op, node.name).surrogate is not None for node in graph.nodes)


def has_gradient(graph: Graph, cond: TorchCondition, x: torch.Tensor,
                 deadline: float = math.inf, surrogate: bool = True) -> bool:
    """True when the PGD loss at the points x [B, n] has a nonzero gradient somewhere.

    With ``surrogate`` the gradient is PGD's own: straight-through across steps (Sign, Floor,
    Round: ``OpRule.surrogate``), so binarised and quantised nets descend; without, the
    graph's true gradient. False for graphs that are piecewise constant in their input
    (ArgMax, Cast to int, a comparison on the path to every output) or whose gradient
    vanishes at x: PGD cannot move there, and a gradient-free search is the better use of
    the time. Only as many points as one step is expected to take before ``deadline`` are
    looked at (True when none fits: nothing is decided, and the attack's rounds stop at their
    own deadline checks).
    """
    n = pass_time.affordable(graph, "step", len(x), deadline)
    if n == 0:
        return True
    x = x[:n].detach().requires_grad_(True)
    start = time.monotonic()
    loss = cond.rows(0, n).loss(graph_outputs(graph, x, surrogate=surrogate),
                                push_all=PUSH_ALL)
    if not loss.requires_grad:
        return False
    finite = torch.isfinite(loss)
    if not bool(finite.any()):
        return False
    (grad,) = torch.autograd.grad(loss[finite].sum(), x, allow_unused=True)
    pass_time.record(graph, "step", n, time.monotonic() - start)
    return grad is not None and bool((grad != 0).any())


def uniform(lo: torch.Tensor, hi: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Uniform points in the boxes, clamped so float rounding cannot leave the box."""
    u = torch.rand(lo.shape, generator=gen, device=lo.device, dtype=lo.dtype)
    return torch.minimum(torch.maximum(lo + u * (hi - lo), lo), hi)


def start_points(lo: torch.Tensor, hi: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """PGD starts: half uniform in the box, half on random faces (each coordinate at its lower
    or upper bound with probability FACE_PROB / 2 each, else uniform)."""
    x = uniform(lo, hi, gen)
    r = torch.rand(lo.shape, generator=gen, device=lo.device, dtype=lo.dtype)
    on_face = torch.rand(lo.shape[:1], generator=gen, device=lo.device) < FACE_SHARE
    r = torch.where(on_face.unsqueeze(1), r, 1.0)  # 1.0: no coordinate at a bound
    x = torch.where(r < FACE_PROB / 2, lo, x)
    return torch.where((r >= FACE_PROB / 2) & (r < FACE_PROB), hi, x)


def centre(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.maximum(lo + 0.5 * (hi - lo), lo), hi)


def attack_boxes(
    graph: Graph,
    lower,
    upper,
    condition: OutputCondition | TorchCondition,
    steps: int,
    restarts: int,
    *,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    deadline: float = math.inf,
    stop_on_any: bool = False,
    step_scale: float = 1.0,
    targeted: bool = True,
) -> AttackResult:
    """PGD with ``restarts`` starting points on each of many sub-boxes ``lower/upper[B, n]``.

    ``lower``/``upper`` are float64 numpy arrays (snapped to float32 boxes here) or float32
    tensors that already are float32 boxes. Returns per box the best point and its IR loss; a
    loss <= 0 means the IR sees a violation, which the caller must re-check with
    ``verifier.validate``. All boxes share one output condition, or a TorchCondition with one
    rhs per box (``TorchCondition.at``). The time is checked between
    steps; boxes not reached before ``deadline`` come back with loss +inf. ``step_scale``
    multiplies the step-size schedule (falsification alternates coarse and fine rounds).
    With ``targeted`` and a condition of several disjuncts, every start but each box's first
    descends on one disjunct alone (``targets``): the min over disjuncts follows whichever
    is lowest at the start, and a restart per target reaches violations it misses.
    """
    if isinstance(lower, np.ndarray):
        device = generator.device if generator is not None else "cpu"
        lo, hi = float32_boxes(np.atleast_2d(lower), np.atleast_2d(upper), device)
    else:
        lo, hi = lower, upper
    cond = condition
    if isinstance(condition, OutputCondition):
        cond = TorchCondition.from_condition(condition, lo.device, lo.dtype)
    n_box, restarts = len(lo), max(1, restarts)
    best_x = centre(lo, hi)
    best_loss = torch.full((n_box,), math.inf, device=lo.device, dtype=lo.dtype)
    chunk = batch_size(graph)
    offset = (int(torch.randint(1 << 20, (1,), generator=generator, device=generator.device))
              if generator is not None else 0)
    # Sample s belongs to box s % n_box, so every box gets its first start before any second.
    total = n_box * restarts
    for s in range(0, total, chunk):
        if time.monotonic() >= deadline:
            break
        idx = torch.arange(s, min(total, s + chunk), device=lo.device)
        box = idx % n_box
        x0 = start_points(lo[box], hi[box], generator)
        if init is not None:
            first = idx < n_box
            x0[first] = init[box[first]]
        target = targets(idx // n_box, cond.n_disjuncts, offset) if targeted else None
        x, loss = pgd(graph, cond.at(box), x0, lo[box], hi[box], steps, deadline,
                      stop_on_any, step_scale, target)
        reduce_best(best_x, best_loss, box, x, loss)
        if stop_on_any and bool((loss <= 0).any()):
            break
    return AttackResult(best_x, best_loss)


def targets(restart: torch.Tensor, n_disjuncts: int, offset: int = 0) -> torch.Tensor | None:
    """The disjunct each start descends on: -1 (all) for each box's first start, the others
    cycling through the disjuncts from ``offset``; None with a single disjunct."""
    if n_disjuncts <= 1:
        return None
    return torch.where(restart == 0, -1, (restart - 1 + offset) % n_disjuncts)


def reduce_best(best_x, best_loss, box, x, loss) -> None:
    """Per box, keep the lowest-loss point among the new samples and the old best."""
    low = best_loss.scatter_reduce(0, box, loss, reduce="amin", include_self=True)
    wins = (loss == low[box]) & (loss < best_loss[box])
    best_x[box[wins]] = x[wins]  # ties carry equal losses, so any winner will do
    best_loss.copy_(low)
