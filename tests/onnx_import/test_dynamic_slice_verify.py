"""End to end: a network that slices at input positions is verified (bounded, not only
attacked) when its starts stay inside the slice, fixed or ranging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from tests.bounds.test_dynamic_slice import _network
from tests.onnx_import.test_dynamic_slice import N_DATA, N_IN, load
from verifier.config import VerifyConfig
from verifier.pipeline import verify
from verifier.spec.types import InputRegion, OutputCondition, Spec


def _spec(lo: np.ndarray, hi: np.ndarray, threshold: float) -> Spec:
    """Unsafe: y0 >= threshold."""
    coef = np.zeros((1, 1, 2))
    coef[0, 0, 0] = -1.0
    return Spec((InputRegion(lo, hi, OutputCondition(coef, np.full((1, 1), -threshold))),),
                N_IN, 2)


@pytest.mark.parametrize("starts", [((1.0, 1.5), (0.0, 0.5)), ((0.0, 2.5), (0.0, 2.5))],
                         ids=["fixed", "range"])
@pytest.mark.parametrize("margin,verdict", [(3.0, "unsat"), (-0.5, "sat")])
def test_patch_network_verdicts(starts, margin, verdict):
    model = load(_network())
    x = np.random.default_rng(0).uniform(-1.0, 1.0, N_IN)
    x[N_DATA:] = [starts[0][0], starts[1][0]]
    y0 = float(run_graph(model.graph, torch.tensor(x[None]))[0].flatten()[0])
    lo, hi = x - 0.01, x + 0.01
    lo[N_DATA:], hi[N_DATA:] = [s[0] for s in starts], [s[1] for s in starts]
    result = verify(model, _spec(lo, hi, y0 + margin), VerifyConfig(timeout=120))
    assert result.verdict == verdict, result.message
    if verdict == "unsat":
        assert result.method != "attack"
