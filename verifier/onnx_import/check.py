"""Differential check: our IR against onnxruntime on points of every spec region's box.

Points are the box corners (all of them for up to ``_ALL_CORNERS_DIM`` inputs, else a bounded
random subset plus the all-lower and all-upper corners), the centre and ``n_random`` uniform
points. The error is |ours - ort| / max(1, |ort|), worst over outputs and points.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np

from verifier.errors import ModelMismatchError

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
_ALL_CORNERS_DIM = 6
_RANDOM_CORNERS = 16
_MAX_REGIONS = 16


def sample_points(lower: np.ndarray, upper: np.ndarray, rng, n_random: int):
    """Points of the box [lower, upper] and their kinds ('corner', 'centre', 'random')."""
    n = lower.size
    if n <= _ALL_CORNERS_DIM:
        signs = np.array(list(itertools.product((0.0, 1.0), repeat=n)))
    else:
        signs = np.concatenate([np.zeros((1, n)), np.ones((1, n)),
                                rng.integers(0, 2, (_RANDOM_CORNERS, n)).astype(np.float64)])
    corners = lower + signs * (upper - lower)
    centre = ((lower + upper) / 2)[None]
    randoms = lower + rng.random((n_random, n)) * (upper - lower)
    points = np.concatenate([corners, centre, randoms])
    kinds = ["corner"] * len(corners) + ["centre"] + ["random"] * n_random
    return points, kinds


def _ours(model, points: np.ndarray) -> list[np.ndarray]:
    import torch

    from bounds.engine.forward import run_graph

    tensors, start = [], 0
    for info in model.graph.inputs:
        size = math.prod(info.shape)
        chunk = torch.as_tensor(points[:, start:start + size], dtype=torch.float32)
        tensors.append(chunk.reshape(len(points), *info.shape))
        start += size
    with torch.no_grad():
        outs = run_graph(model.graph, *tensors)
    return [o.reshape(len(points), -1).double().numpy() for o in outs]


def relative_errors(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-point worst |ours - ref| / max(1, |ref|); a non-finite disagreement counts as inf."""
    ref = ref.astype(np.float64)
    err = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
    both_nan = np.isnan(ours) & np.isnan(ref)
    same_inf = np.isinf(ours) & (ours == ref)
    err = np.where(both_nan | same_inf, 0.0, err)
    err = np.where(np.isnan(err), np.inf, err)
    return err.max(axis=1) if err.size else np.zeros(len(ours))


def differential_check(model, spec, seed: int = 0, n_random: int = 8) -> float:
    """Worst relative error of our IR vs onnxruntime over sampled points of the spec's boxes.

    Raises ModelMismatchError naming the output, the error and the point kind above 1e-4.
    """
    from verifier.onnx_import.ort import run_ort

    rng = np.random.default_rng(seed)
    points, kinds = [], []
    for region in spec.regions[:_MAX_REGIONS]:
        p, k = sample_points(np.asarray(region.lower, np.float64),
                             np.asarray(region.upper, np.float64), rng, n_random)
        points.append(p)
        kinds += k
    pts = np.concatenate(points).astype(np.float32).astype(np.float64)
    ours, refs = _ours(model, pts), run_ort(model, pts)
    worst = 0.0
    for name, o, r in zip(model.output_names, ours, refs, strict=True):
        errs = relative_errors(o, r.reshape(o.shape))
        at = int(np.argmax(errs))
        if errs[at] > TOLERANCE:
            raise ModelMismatchError(
                f"imported model disagrees with onnxruntime on output {name!r}: relative error"
                f" {errs[at]:.3g} > {TOLERANCE:g} at a {kinds[at]} point of the input box")
        worst = max(worst, float(errs[at]))
    log.debug("differential check: worst relative error %.3g over %d points", worst, len(pts))
    return worst
