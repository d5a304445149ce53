"""Differential check: our IR against onnxruntime, allowing float32 rounding and nothing more.

onnxruntime runs the ONNX graph as a float32 program; we evaluate our IR in float64 at the same
(float32) input points. The two legitimately differ by rounding: an output that is a small
difference of large terms (physics residuals, logit margins) can lose all its relative
precision in float32, so no fixed relative tolerance separates rounding from a wrong import.

Segments. onnxruntime exposes, as extra outputs, every ONNX value that maps to an IR value
(``ImportedModel.value_names``: the values that survive simplification unchanged, plus the
outputs). We evaluate the IR node by node and, at each mapped value, record our value and then
continue from onnxruntime's value instead (``check_eval.enclose``). Each recorded value is thus
our evaluation of one short segment (usually one ONNX node, a few where the passes fused nodes)
from onnxruntime's own inputs, and the first value in graph order that differs is where the two
part ways. Comparing only the outputs would make the allowance useless: a worst-case rounding
enclosure propagated through a whole network grows with the product of the weight magnitudes
(measured: 250-330 x |output| on ERAN's 9x200 MLP, 9-20 x on cifar10 resnet_4b).

Allowance. Within a segment we propagate the point through interval bound propagation with the
rounding model of ``bounds.engine.rounding``. By that model's construction the interval encloses
every float32 evaluation of the segment, in any summation order; its distance from the float64
value (plus one float32 rounding of the value itself) is the allowance. It scales with the
magnitude of the terms that were summed, not with the result, so cancellation is allowed for.
One term is added (``check_eval.constant_rounding``): the importer computes some constants in
float64 and rounds them once (BatchNormalization folded into Mul + Add, MatMul+Add and input
normalisation folded into weights) where onnxruntime computes its own, so each constant may
differ by one rounding, U32 |c| times what it multiplies. Without it a folded BatchNorm near
its mean reached 1.47 x the allowance; with it 0.59.

Why ``SLACK`` x the allowance, not the allowance itself. The enclosure bounds float32 runs of
*our* segment; onnxruntime runs a different float32 program for the same real function (the
unfused ONNX nodes, its own fusions), and its kernels for transcendental functions are only
covered by the model's generic allowance, which they can exceed: its Sigmoid is off by up to
1.38e-7 where 2**-19 |y| + 2**-23 allows 1.19e-7 (a sweep of 600k inputs; 1.16 x). Worst-case
dot-product bounds exceed observed errors by orders of magnitude (errors of long sums grow like
sqrt(n) u, the bound like n u), so a factor of 2 absorbs these; a wrong import (a weight off, a
transposed layout) differs by far more. ``worst_ratio`` in the report shows the room left:
at most 1.05 over the dev and scale sets, 0.66 over 111 unusual-campaign models.

Second opinion. The allowance models our structure, not onnxruntime's: its BatchNormalization
computes ``bias - mean * scale / sqrt(var + eps)`` in float32, a difference of terms far larger
than our folded constant when the two nearly cancel (random standalone BatchNorms: 13 of 287
beyond 2x, up to 4x). So before refusing a value, ``check_reference`` evaluates the ONNX nodes
of its segment in float64 with the ONNX reference evaluator, from the same inputs: our value
must then lie within the allowance of what the ONNX graph means. A wrong import fails both.
``worst_ratio`` counts the comparison that decided.

A refusal names the ONNX value and IR node where the values first part ways, the difference,
the allowance and the kind of point.

Cost. The check aims at ``BUDGET_SHARE`` of the time left before the caller's deadline (a batch
running past twice that is abandoned): it times the first point (given up past a quarter of the
time left), then checks as many further points as the share allows, in order of value (each
box's centre, then its extreme corners, then random corners and points). It never runs past
the deadline; when not even one point fits it logs a warning and checks nothing.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from verifier.errors import ModelError, ModelMismatchError
from verifier.onnx_import.check_eval import OutOfTime, compared_values, enclose, excess

log = logging.getLogger(__name__)

SLACK = 2.0
BUDGET_SHARE = 0.05
FIRST_POINT_SHARE = 0.25
_ALL_CORNERS_DIM = 6
_RANDOM_CORNERS = 16
_MAX_REGIONS = 16
_MAX_BATCH = 64
_BATCH_BYTES = 512 << 20  # memory for one batch: onnxruntime's values, ours and enclosures
_now = time.monotonic  # the clock (tests substitute a fake one)


@dataclass(frozen=True)
class CheckReport:
    """Outcome of an accepted check."""

    worst_ratio: float  # largest |ours - ort| / allowance over checked outputs (<= SLACK)
    # largest |ours - ort| / max(1, |ort|) on the outputs, over their last segment only
    worst_relative: float
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
    start = _now()
    points, kinds = plan_points(spec, seed, n_random)
    budget_end = None if deadline is None else start + BUDGET_SHARE * max(deadline - start, 0)
    worst_ratio = worst_relative = 0.0
    largest = _largest_batch(model.graph)
    # The first point is checked whatever the share, unless it takes a quarter of the time.
    hard_stop = None if deadline is None else start + FIRST_POINT_SHARE * max(deadline - start, 0)
    done, batch = 0, 1
    while done < len(points) and batch > 0:
        chunk = slice(done, done + batch)
        t0 = _now()
        try:
            ratio, relative = _check_batch(model, points[chunk], kinds[chunk], hard_stop)
        except OutOfTime:
            break
        worst_ratio, worst_relative = max(worst_ratio, ratio), max(worst_relative, relative)
        done += batch
        per_point = (_now() - t0) / batch
        left = min(len(points) - done, largest)
        batch, hard_stop = _next_batch(per_point, budget_end, left, deadline)
    report = CheckReport(worst_ratio, worst_relative, done, len(points), _now() - start)
    _log_report(report)
    return report


def _largest_batch(graph) -> int:
    """Points per batch within _BATCH_BYTES: every value may be held at once by onnxruntime
    (float32) and by us (float64 value and enclosure ends), 32 bytes an element is ample."""
    elements = sum(math.prod(n.shape) for n in graph.nodes)
    return max(1, min(_MAX_BATCH, _BATCH_BYTES // max(32 * elements, 1)))


def _next_batch(per_point: float, budget_end: float | None, left: int,
                deadline: float | None) -> tuple[int, float | None]:
    """Size of the next batch (at most ``left``) and the time at which it is abandoned."""
    if budget_end is None:
        return left, None
    # 1.5x: a larger batch may cost more per point than the one timed (measured: 1.4x).
    fit = int((budget_end - _now()) / max(1.5 * per_point, 1e-6))
    hard_stop = min(deadline, budget_end + (budget_end - _now()))
    return max(0, min(left, fit)), hard_stop


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
    """(worst error/allowance, worst relative error on outputs) over ``points``; raises
    ModelMismatchError beyond SLACK at the first value in graph order, OutOfTime past
    ``stop``."""
    compared = compared_values(model)
    refs = _ort_values(model, points, list(compared.values()))
    seeds = {ir: refs[onnx] for ir, onnx in compared.items()
             if onnx in refs and refs[onnx].shape[1] == math.prod(model.graph.shape_of(ir))}
    enclosed = enclose(model.graph, points, seeds, stop=stop)
    available = {compared[ir] for ir in seeds}
    worst_ratio = 0.0
    for node in model.graph.nodes:
        if node.name not in enclosed or node.name not in seeds:
            continue
        ours, allowance = enclosed[node.name].flat()
        ratio = excess(ours, allowance, seeds[node.name])
        at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[at] > SLACK:
            ratio = _second_opinion(model, compared[node.name], available, points,
                                    enclosed[node.name], ratio, stop)
            at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[at] > SLACK:
            ref = float(seeds[node.name].reshape(ours.shape)[at])
            raise ModelMismatchError(_mismatch(model, node, compared[node.name], kinds[at[0]],
                                               (float(ours[at]), ref, float(allowance[at]))))
        worst_ratio = max(worst_ratio, float(ratio[at]))
    relative = [_relative(enclosed[o.name].flat()[0], seeds[o.name])
                for o in model.graph.outputs if o.name in enclosed and o.name in seeds]
    return worst_ratio, max(relative, default=0.0)


def _second_opinion(model, onnx_name: str, available: set[str], points: np.ndarray,
                    enclosed, ratio: np.ndarray, stop: float | None) -> np.ndarray:
    """``ratio`` with the points beyond SLACK judged against the float64 ONNX semantics of
    ``onnx_name`` instead (see ``check_reference``); unchanged when that cannot be evaluated
    (an op the reference evaluator lacks, no time left)."""
    from verifier.onnx_import.check_reference import reference_values

    rows = np.flatnonzero(ratio.max(axis=1) > SLACK)
    exact = reference_values(model, onnx_name, available - {onnx_name}, points[rows], stop)
    if exact is None:
        return ratio
    ours, allowance = enclosed.flat()
    decided = ratio.copy()
    decided[rows] = excess(ours[rows], allowance[rows], exact)
    log.info("differential check: onnxruntime's float32 value of %r is %.3g x the allowance"
             " from ours; the float64 ONNX semantics %.3g x", onnx_name,
             float(ratio[rows].max()), float(decided[rows].max()))
    return decided


def _ort_values(model, points: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """onnxruntime's values ``[B, size]`` of the model outputs and the ONNX values ``names``
    (only the outputs when onnxruntime refuses to expose intermediate values)."""
    from verifier.onnx_import.ort import ort_session, run_ort, session_exposing

    try:
        session = session_exposing(model, names)
        values = run_ort(model, points, session=session)
    except Exception as exc:  # noqa: BLE001 - fall back to the model's own outputs
        log.debug("onnxruntime cannot expose intermediate values (%s); outputs only", exc)
        session = ort_session(model)
        try:
            values = run_ort(model, points, session=session)
        except Exception as exc:  # noqa: BLE001
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            # The runtime counterexamples are checked with cannot run the model (a 4-D
            # pooling window, say): nothing it answers could be validated.
            raise ModelError(f"onnxruntime cannot run the model: {exc}") from None
    return dict(zip((o.name for o in session.get_outputs()), values, strict=True))


def _relative(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64).reshape(ours.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
    err = np.where(np.isnan(ours) & np.isnan(ref), 0.0, err)
    err = np.where(np.isinf(ref) & (ours == ref), 0.0, err)
    return float(np.nanmax(err)) if err.size else 0.0


def _mismatch(model, node, onnx_name: str, kind: str, values) -> str:
    ours, ref, allowance = values
    diff = abs(ours - ref)
    role = "output" if onnx_name in model.output_names else "value"
    return (f"imported model disagrees with onnxruntime beyond float32 rounding at ONNX"
            f" {role} {onnx_name!r} (IR node {node.name!r}, {node.op}; the first compared value"
            f" that differs): |difference| {diff:.3g} (relative error"
            f" {diff / max(1.0, abs(ref)):.3g}) > {SLACK:g} x allowance {allowance:.3g} at a"
            f" {kind} point of the input box")
