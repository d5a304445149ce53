"""Counterexample validation against onnxruntime, with a stated tolerance on the input box.

The spec's box is over the reals; the network is a float32 program. A candidate is accepted
only when

* its float32 value lies inside a region's box, or -- only where the box holds no float32 value
  in some coordinate (a coordinate pinned to 0.1, say) -- at the float32 nearest to it, at a
  distance within the current box tolerance (``box_tolerance``: the VNN-COMP checker's 1e-4
  absolute by default, 0 in strict mode); the distance is reported in
  ``Counterexample.box_distance`` (0: the point lies in the real box), and
* onnxruntime, run on the original ONNX model with that float32 input, produces an output on
  which the region's output condition holds (float64 arithmetic on the float32 outputs).

Candidates are first snapped into the box: a candidate within rounding distance of the box
(see ``SNAP_REL``) is clipped to the float32 box the attacks search (``attack_float32_box``), so
a bound such as 0.1, which float32 cannot represent, never makes a genuine counterexample fail;
a candidate clearly outside the box is rejected. ``Counterexample.x`` holds the float32 values
in a float64 array, so that ``repr(float(v))`` prints the exact value that onnxruntime ran on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from verifier.onnx_import.loader import ImportedModel
from verifier.onnx_import.ort import ort_session, run_batched
from verifier.result import Counterexample
from verifier.spec.types import InputRegion, Spec

log = logging.getLogger(__name__)

# A coordinate at most SNAP_REL * (1 + |bound|) outside the box counts as float rounding
# (a float32 ulp is 2**-23 relative, so the nearest float32 to a bound is always within it).
SNAP_REL = 1e-6
# The VNN-COMP counterexample checker accepts inputs within this absolute distance of the box.
VNNCOMP_BOX_TOL = 1e-4
# How far outside the real box a validated input may lie: set per run by ``box_tolerance``
# (a context variable, so concurrent runs in one process do not share it).
_BOX_TOL: ContextVar[float] = ContextVar("box_tolerance", default=VNNCOMP_BOX_TOL)

def float32_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tightest float32 box inside the float64 box [lower, upper].

    Rounding a float64 bound to float32 may step outside the box; then the neighbouring float32
    towards the inside is taken. Where no float32 lies in [lower, upper] the returned lower
    exceeds the returned upper (see ``float32_box_empty``).
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    with np.errstate(over="ignore"):
        lo = lower.astype(np.float32)
        hi = upper.astype(np.float32)
    lo = np.where(lo.astype(np.float64) < lower, np.nextafter(lo, np.float32(np.inf)), lo)
    hi = np.where(hi.astype(np.float64) > upper, np.nextafter(hi, np.float32(-np.inf)), hi)
    return lo.astype(np.float32), hi.astype(np.float32)


def nearest_float32_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 points nearest to the real box [lower, upper]: ``float32_box`` where a
    coordinate's interval holds a float32 value, else the two float32 neighbours of the
    interval (the one below ``lower`` and the one above ``upper``). Never empty."""
    lo, hi = float32_box(lower, upper)
    # In an empty coordinate float32_box's lower is the float32 just above ``upper`` and its
    # upper the float32 just below ``lower``: swapped, they are the two neighbours.
    empty = lo > hi
    return np.where(empty, hi, lo), np.where(empty, lo, hi)


def attack_float32_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 box attacks search and candidates are clipped to: the nearest float32
    points (``nearest_float32_box``) while the run accepts a box distance, else the float32
    points inside the box (empty, lower > upper, where the box holds none)."""
    if current_box_tolerance() > 0:
        return nearest_float32_box(lower, upper)
    return float32_box(lower, upper)


def has_attack_point(region: InputRegion) -> bool:
    """True when the region's attack box holds a float32 point (always, unless strict)."""
    lo, hi = attack_float32_box(region.lower, region.upper)
    return not bool(np.any(lo > hi))


def box_distance(x: np.ndarray, region: InputRegion) -> float:
    """Largest distance (float64) by which a coordinate of x lies outside the region's box."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    excess = np.maximum(region.lower - x, x - region.upper)
    return float(max(0.0, np.max(excess, initial=0.0)))


def current_box_tolerance() -> float:
    """How far outside the real box a counterexample may lie in the current run."""
    return _BOX_TOL.get()


@contextmanager
def box_tolerance(tolerance: float) -> Iterator[None]:
    """Validate with this box tolerance inside the block (0: strict, the VNN-COMP 2026 mode)."""
    token = _BOX_TOL.set(float(tolerance))
    try:
        yield
    finally:
        _BOX_TOL.reset(token)


def float32_box_empty(lo32: np.ndarray, hi32: np.ndarray) -> np.ndarray:
    """Boolean over leading axes: True where some coordinate has no float32 inside the box."""
    return np.any(lo32 > hi32, axis=-1)


def snap_into_box(x: np.ndarray, region: InputRegion) -> np.ndarray | None:
    """``x`` as float32 clipped into the region's attack box (``attack_float32_box``), or None
    when x is clearly outside (farther than rounding distance), the box holds no float32 point
    in strict mode, or the result lies farther outside the real box than the tolerance."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    slack = SNAP_REL * (1.0 + np.maximum(np.abs(region.lower), np.abs(region.upper)))
    if np.any(x < region.lower - slack) or np.any(x > region.upper + slack):
        return None
    lo32, hi32 = attack_float32_box(region.lower, region.upper)
    if np.any(lo32 > hi32):
        return None
    with np.errstate(over="ignore"):
        x32 = np.clip(x.astype(np.float32), lo32, hi32)
    if box_distance(x32, region) > current_box_tolerance():
        return None
    return x32


def _input_dtype(sess, i: int):
    return np.float64 if sess.get_inputs()[i].type == "tensor(double)" else np.float32


def run_onnx(model: ImportedModel, x: np.ndarray) -> np.ndarray:
    """Run onnxruntime on one flattened input; returns the flattened, concatenated outputs
    as float64 (exact copies of the model's float32 values)."""
    sess = ort_session(model.onnx_bytes)
    x = np.asarray(x).reshape(-1)
    feeds, offset = {}, 0
    for i, (name, shape) in enumerate(zip(model.input_names, model.onnx_input_shapes, strict=True)):
        size = math.prod(shape)
        part = x[offset:offset + size].reshape(shape)
        feeds[name] = part.astype(_input_dtype(sess, i))
        offset += size
    if offset != x.size:
        raise ValueError(f"input has {x.size} values, the model takes {offset}")
    outs = sess.run(list(model.output_names), feeds)
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])


def _check_region(model: ImportedModel, spec: Spec, x: np.ndarray, r: int):
    region = spec.regions[r]
    x32 = snap_into_box(x, region)
    if x32 is None:
        return None
    y = run_onnx(model, x32)
    if y.size != spec.n_outputs:
        raise ValueError(f"model produced {y.size} outputs, the spec has {spec.n_outputs}")
    if not region.condition.holds(y):
        return None
    distance = box_distance(x32, region)
    if distance > 0:
        log.info("counterexample lies %.3g outside the real box of region %d (tolerance %.3g)",
                 distance, r, current_box_tolerance())
    return Counterexample(x=x32.astype(np.float64), y=y, region=r, box_distance=distance)


def _candidate_regions(spec: Spec, x: np.ndarray) -> list[int]:
    """Regions whose box contains x up to rounding slack, nearest first."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    found = []
    for r, reg in enumerate(spec.regions):
        slack = SNAP_REL * (1.0 + np.maximum(np.abs(reg.lower), np.abs(reg.upper)))
        excess = np.maximum(reg.lower - x, x - reg.upper)
        if np.all(excess <= slack):
            found.append((float(np.max(excess)), r))
    return [r for _, r in sorted(found)]


def validate_counterexample(
    model: ImportedModel, spec: Spec, x: np.ndarray, region: int | None = None
) -> Counterexample | None:
    """Re-check a candidate counterexample with onnxruntime; None unless it truly violates.

    ``region`` restricts the check to one region (the attack knows which box it searched);
    otherwise every region whose box holds x (up to rounding, see module doc) is tried.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size != spec.n_inputs:
        raise ValueError(f"candidate has {x.size} values, the spec has {spec.n_inputs} inputs")
    if not np.all(np.isfinite(x)):
        return None
    regions = [region] if region is not None else _candidate_regions(spec, x)
    for r in regions:
        cex = _check_region(model, spec, x, r)
        if cex is not None:
            return cex
    return None


def is_batchable(model: ImportedModel) -> bool:
    """True when the ONNX model has one input whose leading dimension is symbolic."""
    sess = ort_session(model.onnx_bytes)
    inputs = sess.get_inputs()
    return len(inputs) == 1 and len(inputs[0].shape) > 1 and not isinstance(inputs[0].shape[0], int)


def run_onnx_batch(model: ImportedModel, xs: np.ndarray) -> np.ndarray:
    """Outputs ``[B, n_out]`` for flattened inputs ``xs[B, n]``: one onnxruntime call when the
    model has a symbolic batch axis, else one call per row."""
    xs = np.asarray(xs).reshape(len(xs), -1)
    if len(xs) > 1 and is_batchable(model):
        sess = ort_session(model.onnx_bytes)
        shape = model.onnx_input_shapes[0][1:]
        dtype = _input_dtype(sess, 0)
        name = model.input_names[0]
        try:
            rows = run_batched(sess, list(model.output_names),
                               {name: xs.reshape(len(xs), *shape).astype(dtype)},
                               {name: xs[:1].reshape(1, *shape).astype(dtype)}, len(xs))
            if rows is not None:
                return np.concatenate([r.astype(np.float64) for r in rows], axis=1)
            log.debug("an output's batch axis is not found; running row by row")
        except Exception as exc:  # the graph may hard-code batch 1 in a Reshape
            log.debug("batched onnxruntime call failed (%s); running row by row", exc)
    return np.stack([run_onnx(model, x) for x in xs])


def validate_batch(
    model: ImportedModel,
    spec: Spec,
    xs: np.ndarray,
    regions: np.ndarray | None = None,
    limit: int | None = None,
) -> Counterexample | None:
    """The first of the candidates ``xs[B, n]`` that validates (in order), or None.

    ``regions[B]`` names the region each candidate belongs to (else all holding regions are
    tried, row by row). Candidates are snapped into their box, screened with one batched
    onnxruntime call where the model allows it, and the first hit is confirmed by an unbatched
    call, whose output is the one reported. ``limit`` caps how many candidates are tried.
    """
    xs = np.asarray(xs, dtype=np.float64).reshape(len(xs), -1)
    if limit is not None:
        xs = xs[:limit]
        regions = None if regions is None else regions[:limit]
    if regions is None or len(xs) <= 1 or not is_batchable(model):
        for i in range(len(xs)):
            r = None if regions is None else int(regions[i])
            cex = validate_counterexample(model, spec, xs[i], region=r)
            if cex is not None:
                return cex
        return None
    snapped = [snap_into_box(x, spec.regions[int(r)]) for x, r in zip(xs, regions, strict=True)]
    keep = [i for i, s in enumerate(snapped) if s is not None]
    if not keep:
        return None
    ys = run_onnx_batch(model, np.stack([snapped[i] for i in keep]))
    for j, i in enumerate(keep):
        r = int(regions[i])
        if spec.regions[r].condition.holds(ys[j]):
            cex = _check_region(model, spec, snapped[i], r)
            if cex is not None:
                return cex
    return None
