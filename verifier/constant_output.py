"""Models whose every output is a constant of the graph (nothing depends on the input).

The importer refuses them (there is nothing to bound), but they are not hard: the network
computes the same float32 output y for every input, so one onnxruntime evaluation decides
each region. A region whose output condition holds at y is violated at every float32 point
of its box (``sat``, validated like any counterexample); when no region's condition holds at
y, no input violates the property (``unsat``). A non-finite y decides nothing.
"""

from __future__ import annotations

import numpy as np

from verifier.result import VerificationResult
from verifier.spec.types import Spec
from verifier.validate import attack_float32_box, run_onnx, validate_counterexample


def decide_constant_output(model, spec: Spec) -> VerificationResult:
    """``sat`` or ``unsat`` from one evaluation of ``model`` (an OrtModel whose outputs are
    all constants); ``unknown`` when the output is not finite, or when it violates a region
    that holds no float32 point the run accepts (strict boxes)."""
    y = run_onnx(model, _any_float32_point(spec))
    if not np.all(np.isfinite(y)):
        return VerificationResult("unknown", method="constant-output",
                                  message="the model's output is constant but not finite")
    violated = [r for r, region in enumerate(spec.regions) if region.condition.holds(y)]
    if not violated:
        return VerificationResult(
            "unsat", method="constant-output",
            message="every output is a constant of the graph; it satisfies the property")
    for r in violated:
        lo, hi = attack_float32_box(spec.regions[r].lower, spec.regions[r].upper)
        if np.all(lo <= hi):
            cex = validate_counterexample(model, spec, lo, region=r)
            if cex is not None:
                return VerificationResult("sat", cex, method="constant-output")
    return VerificationResult(
        "unknown", method="constant-output",
        message="the constant output violates the property only in boxes with no float32 "
                "point the run accepts")


def _any_float32_point(spec: Spec) -> np.ndarray:
    """A float32 point for the model's input (any one: the output does not depend on it)."""
    region = spec.regions[0]
    lo, hi = attack_float32_box(region.lower, region.upper)
    return np.where(lo <= hi, lo, np.float32(region.lower)).astype(np.float32)
