"""Gradient-free falsification on onnxruntime: for models we cannot run or differentiate.

Used when the importer refuses a model that onnxruntime runs (``ort_model.OrtModel``), when
the imported graph holds an op without a bound rule, or when our IR disagrees with
onnxruntime. It needs nothing but the original ONNX model, and suits piecewise-constant
networks (ArgMax, Cast to int, ScatterND at an input-dependent position), whose gradients are
zero almost everywhere.

Every round gives each region a batch of candidates in its float32 attack box
(``validate.attack_float32_box``): in the first round the centre, both corners, random
vertices and uniform points; later, half of the batch is a local search around the region's
best point (Gaussian and sign steps whose scale grows after a round that improved and shrinks
after one that did not, restarting large when it gets tiny: plateaus of piecewise-constant
networks need big moves), half is fresh uniform points and points on random faces. The
objective is the one the PGD attack uses (``loss <= 0`` iff the output condition holds); hits
are confirmed by ``validate.validate_counterexample``.

The clock is checked before every onnxruntime call; batches grow while a batch takes well
under ``BATCH_TARGET_S``, so one batch never holds the run past its stop time by much.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from verifier.result import Counterexample
from verifier.spec.types import OutputCondition, Spec
from verifier.validate import (
    attack_float32_box,
    float32_box,
    is_batchable,
    run_onnx,
    run_onnx_batch,
    validate_counterexample,
)

log = logging.getLogger(__name__)

BATCH_TARGET_S = 0.1
MAX_BATCH = 256
# Candidates confirmed with an unbatched onnxruntime call per batch (best loss first).
CONFIRM_PER_BATCH = 4
# Local-search step scale, as a fraction of each coordinate's width.
SIGMA_START, SIGMA_MIN, SIGMA_MAX = 0.25, 1e-3, 0.5
# Bound on batch * disjuncts * rows per objective evaluation (memory).
_MAX_LHS = 1 << 22


def condition_loss(cond: OutputCondition, ys: np.ndarray) -> np.ndarray:
    """[B] min over disjuncts of the largest row gap coef @ y - rhs (<= 0: the condition holds,
    up to strictness, which validation checks exactly); NaN outputs give +inf."""
    d, k, _ = cond.coef.shape
    if d == 0:
        return np.full(len(ys), np.inf)
    active = np.isfinite(cond.rhs)
    step = max(1, _MAX_LHS // max(1, len(ys) * k))
    parts = []
    for s in range(0, d, step):
        lhs = np.einsum("dkn,bn->bdk", cond.coef[s:s + step], ys) - np.where(
            active[s:s + step], cond.rhs[s:s + step], 0.0)
        gap = np.where(active[s:s + step], lhs, -np.inf)
        parts.append(gap.max(axis=2).min(axis=1))
    loss = np.min(np.stack(parts, axis=1), axis=1)
    return np.where(np.isnan(loss), np.inf, loss)


@dataclass
class _RegionState:
    """Search state of one region: its float32 attack box restricted to the free coordinates
    (``free``; the others stay at ``base``), and the best point so far (free coordinates)."""

    index: int
    free: np.ndarray  # indices of coordinates with room to move [m]
    base: np.ndarray  # a full point [n]: pinned coordinates at the float32 nearest the box
    lo: np.ndarray  # float64 copies of float32 bounds [m]
    hi: np.ndarray
    best_x: np.ndarray
    best_loss: float = math.inf
    sigma: float = SIGMA_START

    def full(self, xs: np.ndarray) -> np.ndarray:
        """Full points [B, n] from free coordinates xs [B, m]."""
        out = np.repeat(self.base[None], len(xs), axis=0)
        out[:, self.free] = xs
        return out


def region_state(index: int, lower: np.ndarray, upper: np.ndarray) -> _RegionState | None:
    """The search state of a region's box; None when it holds no float32 point (strict mode).

    A coordinate is pinned when the real box fixes it (lower == upper) or holds no float32
    value: it stays at the float32 nearest to the box's midpoint, so that the thousands of
    fixed pixels of a patch or sensor-window spec cost nothing per candidate.
    """
    lo, hi = attack_float32_box(lower, upper)
    if np.any(lo > hi):
        return None
    lo, hi = lo.astype(np.float64), hi.astype(np.float64)
    inside_lo, inside_hi = float32_box(lower, upper)
    free = np.flatnonzero((upper > lower) & (inside_lo <= inside_hi))
    with np.errstate(over="ignore"):
        base = _to_float32(lower + 0.5 * (upper - lower), lo, hi)
    return _RegionState(index, free, base, lo[free], hi[free], base[free])


def falsify_blackbox(model, spec: Spec, deadline: float, seed: int = 0,
                     budget_s: float | None = None) -> Counterexample | None:
    """Search for a counterexample by evaluating ``model`` (ImportedModel or OrtModel) with
    onnxruntime only, until a validated one is found or the time (``deadline``,
    time.monotonic; at most ``budget_s`` from now) is up. None proves nothing."""
    now = time.monotonic()
    stop = deadline if budget_s is None else min(deadline, now + budget_s)
    search = _BlackBoxSearch(model, spec, stop, np.random.default_rng(seed))
    cex = search.run()
    log.info("black-box attack: %s after %.2fs (%d points evaluated)",
             "counterexample" if cex is not None else "nothing", time.monotonic() - now,
             search.evaluated)
    return cex


class _BlackBoxSearch:
    """One black-box run: shared state for the rounds."""

    def __init__(self, model, spec: Spec, stop: float, rng: np.random.Generator) -> None:
        self.model, self.spec, self.stop, self.rng = model, spec, stop, rng
        self.batch = 8
        self.evaluated = 0

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.stop

    def run(self) -> Counterexample | None:
        states = self._states()
        for round_ in itertools.count():
            if not states:  # every box was a single point, tried in the first round
                return None
            for state in states:
                if self.out_of_time():
                    return None
                cex = self._round(state, round_ == 0)
                if cex is not None:
                    return cex
            states = [s for s in states if s.free.size > 0]
        return None

    def _states(self) -> list[_RegionState]:
        states = []
        for r, region in enumerate(self.spec.regions):
            if self.out_of_time():
                break
            state = region_state(r, region.lower, region.upper)
            if state is not None:
                states.append(state)
        return states

    def _round(self, state: _RegionState, first: bool) -> Counterexample | None:
        xs = self._first_points(state) if first else self._next_points(state)
        start = time.monotonic()
        ys, xs = self._evaluate(state.full(xs))
        xs = xs[:, state.free]
        self._adapt_batch(time.monotonic() - start, len(xs))
        if len(xs) == 0:
            return None
        loss = condition_loss(self.spec.regions[state.index].condition, ys)
        best = int(np.argmin(loss))
        improved = loss[best] < state.best_loss
        if improved:
            state.best_x, state.best_loss = xs[best].copy(), float(loss[best])
        state.sigma = min(SIGMA_MAX, 1.5 * state.sigma) if improved else 0.6 * state.sigma
        if state.sigma < SIGMA_MIN:
            state.sigma = SIGMA_START
        return self._confirm(state.index, state.full(xs), loss)

    def _first_points(self, state: _RegionState) -> np.ndarray:
        lo, hi = state.lo, state.hi
        n_rest = max(0, self.batch - 3)
        vertices = np.where(self.rng.random((n_rest // 2, lo.size)) < 0.5, lo, hi)
        return np.concatenate([state.best_x[None], lo[None], hi[None], vertices,
                               self._uniform(lo, hi, n_rest - len(vertices))])

    def _next_points(self, state: _RegionState) -> np.ndarray:
        lo, hi, n = state.lo, state.hi, self.batch
        n_local = max(1, n // 2)
        width = hi - lo
        noise = self.rng.standard_normal((n_local, lo.size))
        signs = self.rng.random(n_local) < 0.5  # half of the local moves are sign steps
        noise[signs] = np.sign(noise[signs])
        local = _to_float32(state.best_x + state.sigma * width * noise, lo, hi)
        n_far = n - n_local
        faces = self._uniform(lo, hi, n_far)
        on_face = self.rng.random(faces.shape) < 0.5
        faces[: n_far // 2] = np.where(on_face[: n_far // 2],
                                       np.where(self.rng.random((n_far // 2, lo.size)) < 0.5,
                                                lo, hi), faces[: n_far // 2])
        return np.concatenate([local, faces])

    def _uniform(self, lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
        return _to_float32(lo + self.rng.random((n, lo.size)) * (hi - lo), lo, hi)

    def _evaluate(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs of the points evaluated before the stop time, and those points."""
        if len(xs) > 1 and is_batchable(self.model):
            ys = run_onnx_batch(self.model, xs)
            self.evaluated += len(xs)
            return ys, xs
        ys = []
        for x in xs:
            if self.out_of_time():
                break
            ys.append(run_onnx(self.model, x.astype(np.float32)))
        self.evaluated += len(ys)
        if not ys:
            return np.zeros((0, self.spec.n_outputs)), xs[:0]
        return np.stack(ys), xs[:len(ys)]

    def _adapt_batch(self, took: float, done: int) -> None:
        if done == self.batch and took < 0.5 * BATCH_TARGET_S:
            self.batch = min(MAX_BATCH, 2 * self.batch)
        elif took > 2 * BATCH_TARGET_S:
            self.batch = max(4, self.batch // 2)

    def _confirm(self, region: int, xs: np.ndarray, loss: np.ndarray) -> Counterexample | None:
        hits = np.flatnonzero(loss <= 0)
        for i in hits[np.argsort(loss[hits])][:CONFIRM_PER_BATCH]:
            cex = validate_counterexample(self.model, self.spec, xs[i], region=region)
            if cex is not None:
                return cex
        if len(hits):
            log.debug("%d black-box hit(s) rejected by validation", len(hits))
        return None


def _to_float32(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Points clipped into [lo, hi] and rounded to float32 (kept as float64): the bounds are
    float32 values, so rounding cannot leave the box."""
    return np.clip(x, lo, hi).astype(np.float32).astype(np.float64)
