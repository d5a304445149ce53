"""Known-sat dev benchmark instances are falsified, and every counterexample re-checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from verifier.attack import falsify
from verifier.config import AttackConfig
from verifier.onnx_import.loader import load_model
from verifier.spec import load_spec
from verifier.validate import run_onnx

CASES = [
    ("test", "onnx/test_sat.onnx", "vnnlib/test_prop.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_2_2_batch_2000.onnx", "vnnlib/prop_2.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_1_7_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_1_8_batch_2000.onnx", "vnnlib/prop_4.vnnlib"),
    ("mnistfc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_5_0.05.vnnlib"),
    ("verivital", "onnx/Convnet_maxpool.onnx", "vnnlib/prop_14_0.004.vnnlib"),
    ("marabou-cifar10", "onnx/cifar10_small.onnx",
     "vnnlib/networkcifar10_small_index6413_eps0.024_target7_orig6.vnnlib"),
]


def _load(benchmarks_dir, bench, onnx_rel, vnnlib_rel):
    """The model and spec of a case labelled sat in the benchmark's expected.csv; an import or
    parse failure fails the test."""
    root = benchmarks_dir / bench
    row = f"{onnx_rel},{vnnlib_rel},sat"
    assert row in (root / "expected.csv").read_text(), f"{row} is not labelled sat"
    return load_model(root / onnx_rel), load_spec(root / vnnlib_rel)


@pytest.mark.parametrize(("bench", "onnx_rel", "vnnlib_rel"), CASES)
def test_known_sat_is_falsified(benchmarks_dir, bench, onnx_rel, vnnlib_rel):
    model, spec = _load(benchmarks_dir, bench, onnx_rel, vnnlib_rel)
    start = time.monotonic()
    cex = falsify(model, spec, start + 30.0, AttackConfig(time_share=1.0), budget_s=20.0)
    assert cex is not None
    region = spec.regions[cex.region]
    assert region.contains(cex.x)  # exact, zero tolerance
    assert np.array_equal(cex.x.astype(np.float32).astype(np.float64), cex.x)
    y = run_onnx(model, cex.x.astype(np.float32))
    assert np.array_equal(y, cex.y)
    assert region.condition.holds(y)
