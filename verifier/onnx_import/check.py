"""Differential check: our IR against onnxruntime, allowing float32 rounding and nothing more.

onnxruntime runs the ONNX graph as a float32 program; we evaluate our IR in float64 at the same
(float32) input points. The two legitimately differ by rounding: an output that is a small
difference of large terms (physics residuals, logit margins) can lose all its relative
precision in float32, so no fixed relative tolerance separates rounding from a wrong import.

Allowance. At each point we propagate the zero-width box through interval bound propagation
with the rounding model of ``bounds.engine.rounding`` (``check_eval.enclose``). By that model's
construction the interval encloses every float32 evaluation of the IR at the point, in any
summation order; its distance from the float64 value is the allowance. It scales with the
magnitude of the terms that were summed, not with the result, so cancellation is allowed for.

Why ``SLACK`` x the allowance, not the enclosure itself. The enclosure bounds float32 runs of
*our* graph. onnxruntime runs a different float32 program for the same real function: the
unfused ONNX graph, or its own fusions (Conv+BatchNorm folded in float32, MatMul+Add as Gemm),
and kernels (Winograd convolutions, vectorised exp/tanh) whose error the model only covers
through the generic allowance. The same error model applied to either program gives bounds of
the same order (each fusion moves weights by one float32 rounding, which the gamma(n+1) factor
already exceeds), and worst-case bounds exceed observed errors by orders of magnitude (errors
of long sums grow like sqrt(n) u, the bound like n u). A factor of 2 absorbs the structural
difference; a wrong import (a weight off, a transposed layout) differs by far more.
``worst_ratio`` in the report shows how much room was left.

A refusal names the output, the difference, the allowance, the point kind and the first IR
value whose mapped ONNX value already differs (onnxruntime's intermediate values are exposed as
extra outputs, mapped through ``ImportedModel.value_names``).

Cost. The check spends at most ``BUDGET_SHARE`` of the time left before the caller's deadline:
it times the first point, then checks as many further points as that share allows, in order
of value (each box's centre, then its extreme corners, then random corners and points). It
never runs past the deadline; with no time left it logs a warning and checks nothing.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np

from verifier.errors import ModelMismatchError
from verifier.onnx_import.check_eval import OutOfTime, enclose, excess, first_divergence

log = logging.getLogger(__name__)

SLACK = 2.0
BUDGET_SHARE = 0.05
_ALL_CORNERS_DIM = 6
_RANDOM_CORNERS = 16
_MAX_REGIONS = 16
_MAX_BATCH = 64


@dataclass(frozen=True)
class CheckReport:
    """Outcome of an accepted check."""

    worst_ratio: float  # largest |ours - ort| / allowance over checked outputs (<= SLACK)
    worst_relative: float  # largest |ours - ort| / max(1, |ort|), for comparison
    points: int  # points checked
    planned: int  # points planned (fewer are checked when time is short)
    seconds: float


def sample_points(lower: np.ndarray, upper: np.ndarray, rng, n_random: int):
    """Points of the box [lower, upper] and their kinds, most telling first: the centre, the
    all-lower and all-upper corners, further corners (all of them up to 6 inputs, else 16
    random ones), then ``n_random`` uniform points."""
    n = lower.size
    if n <= _ALL_CORNERS_DIM:
        signs = np.array(list(itertools.product((0.0, 1.0), repeat=n)))
        signs = np.concatenate([signs[:1], signs[-1:], signs[1:-1]])
    else:
        signs = np.concatenate([np.zeros((1, n)), np.ones((1, n)),
                                rng.integers(0, 2, (_RANDOM_CORNERS, n)).astype(np.float64)])
    corners = lower + signs * (upper - lower)
    centre = ((lower + upper) / 2)[None]
    randoms = lower + rng.random((n_random, n)) * (upper - lower)
    points = np.concatenate([centre, corners, randoms])
    kinds = ["centre"] + ["corner"] * len(corners) + ["random"] * n_random
    return points, kinds


def plan_points(spec, seed: int, n_random: int) -> tuple[np.ndarray, list[str]]:
    """Sample points of up to 16 regions, interleaved by rank (every region's centre first),
    rounded to float32 since both evaluations take float32 inputs."""
    rng = np.random.default_rng(seed)
    ranked = []
    for r, region in enumerate(spec.regions[:_MAX_REGIONS]):
        pts, kinds = sample_points(np.asarray(region.lower, np.float64),
                                   np.asarray(region.upper, np.float64), rng, n_random)
        ranked += [(rank, r, p, k) for rank, (p, k) in enumerate(zip(pts, kinds, strict=True))]
    ranked.sort(key=lambda item: (item[0], item[1]))
    if not ranked:
        return np.zeros((0, spec.n_inputs)), []
    points = np.stack([item[2] for item in ranked]).astype(np.float32).astype(np.float64)
    return points, [item[3] for item in ranked]


def differential_check(model, spec, seed: int = 0, n_random: int = 8,
                       deadline: float | None = None) -> float:
    """Check the IR against onnxruntime on sampled points of the spec's boxes; return the
    worst relative error seen. Raises ModelMismatchError on a difference beyond float32
    rounding. ``deadline``: ``time.monotonic()`` by which the caller's whole run must end."""
    return run_check(model, spec, seed, n_random, deadline).worst_relative


def run_check(model, spec, seed: int = 0, n_random: int = 8,
              deadline: float | None = None) -> CheckReport:
    """The differential check with its report (see the module docstring)."""
    start = time.monotonic()
    points, kinds = plan_points(spec, seed, n_random)
    budget_end = None if deadline is None else start + BUDGET_SHARE * max(deadline - start, 0)
    worst_ratio = worst_relative = 0.0
    done, batch, hard_stop = 0, 1, deadline
    while done < len(points) and batch > 0:
        chunk = slice(done, done + batch)
        t0 = time.monotonic()
        try:
            ratio, relative = _check_batch(model, points[chunk], kinds[chunk], hard_stop)
        except OutOfTime:
            break
        worst_ratio, worst_relative = max(worst_ratio, ratio), max(worst_relative, relative)
        done += batch
        per_point = (time.monotonic() - t0) / batch
        batch, hard_stop = _next_batch(per_point, budget_end, len(points) - done, deadline)
    report = CheckReport(worst_ratio, worst_relative, done, len(points), time.monotonic() - start)
    _log_report(report)
    return report


def _next_batch(per_point: float, budget_end: float | None, left: int,
                deadline: float | None) -> tuple[int, float | None]:
    """Size of the next batch and the time at which it is abandoned."""
    if budget_end is None:
        return min(left, _MAX_BATCH), None
    fit = int((budget_end - time.monotonic()) / max(per_point, 1e-6))
    hard_stop = min(deadline, budget_end + (budget_end - time.monotonic()))
    return max(0, min(left, fit, _MAX_BATCH)), hard_stop


def _log_report(report: CheckReport) -> None:
    if report.points == 0 and report.planned:
        log.warning("differential check skipped: no time left to evaluate one point")
    elif report.points < report.planned:
        log.info("differential check: %d of %d points within its time share",
                 report.points, report.planned)
    log.debug("differential check: %d points, worst error/allowance %.3g, worst relative"
              " error %.3g, %.2f s", report.points, report.worst_ratio, report.worst_relative,
              report.seconds)


def _check_batch(model, points: np.ndarray, kinds: list[str], stop: float | None):
    """(worst error/allowance, worst relative error) over ``points``; raises
    ModelMismatchError beyond SLACK, OutOfTime past ``stop``."""
    from verifier.onnx_import.ort import run_ort

    enclosed = enclose(model.graph, points, stop=stop)
    refs = run_ort(model, points)
    worst_ratio = worst_relative = 0.0
    for info, name, ref in zip(model.graph.outputs, model.output_names, refs, strict=True):
        ours, allowance = enclosed[info.name].flat()
        ratio = excess(ours, allowance, ref)
        at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[at] > SLACK:
            _refuse(model, name, points[at[0]:at[0] + 1], kinds[at[0]],
                    (ours[at], float(ref.reshape(ours.shape)[at]), allowance[at]), stop)
        worst_ratio = max(worst_ratio, float(ratio[at]))
        worst_relative = max(worst_relative, _relative(ours, ref))
    return worst_ratio, worst_relative


def _relative(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64).reshape(ours.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
    err = np.where(np.isnan(ours) & np.isnan(ref), 0.0, err)
    err = np.where(np.isinf(ref) & (ours == ref), 0.0, err)
    return float(np.nanmax(err)) if err.size else 0.0


def _refuse(model, output: str, point: np.ndarray, kind: str, values, stop) -> None:
    ours, ref, allowance = values
    diff = abs(ours - ref)
    try:
        where = first_divergence(model, point, SLACK, stop)
    except OutOfTime:
        where = "not located (no time left)"
    raise ModelMismatchError(
        f"imported model disagrees with onnxruntime on output {output!r} beyond float32"
        f" rounding: |difference| {diff:.3g} (relative error {diff / max(1.0, abs(ref)):.3g})"
        f" > {SLACK:g} x allowance {allowance:.3g} at a {kind} point of the input box;"
        f" first differing value: {where}")
