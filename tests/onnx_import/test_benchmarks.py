"""Every benchmark model imports and agrees with onnxruntime (differential check on [0, 1])."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bounds.registry import rules
from tests.conftest import BENCHMARKS
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.check import differential_check
from verifier.onnx_import.loader import load_model
from verifier.spec.types import InputRegion, OutputCondition, Spec

# Without the benchmarks folder, one placeholder path: the benchmarks_dir fixture then skips the
# test naming the folder (or fails it, NNCERT_REQUIRE_BENCHMARKS=1) instead of an empty set.
ALL_MODELS = (sorted(BENCHMARKS.glob("*/onnx/*.onnx")) if BENCHMARKS.is_dir()
              else [BENCHMARKS / "absent" / "onnx" / "absent.onnx"])


def _first_per_benchmark(paths: list[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        if p.parent.parent.name not in seen:
            seen.add(p.parent.parent.name)
            out.append(p)
    return out


def unit_box_spec(model) -> Spec:
    n_in = sum(math.prod(t.shape) for t in model.graph.inputs)
    n_out = sum(math.prod(t.shape) for t in model.graph.outputs)
    condition = OutputCondition(np.zeros((1, 1, n_out)), np.full((1, 1), np.inf))
    return Spec((InputRegion(np.zeros(n_in), np.ones(n_in), condition),), n_in, n_out)


# Benchmarks whose models use an op in a way the importer cannot handle soundly: they must be
# refused with an UnsupportedOpError naming the op (the attack still runs them in onnxruntime).
# (cctsdb_yolo_2023's ScatterND at the input's coordinates imports as ScatterWindow.)
REFUSED: dict[str, str] = {}


def check_model(path: Path) -> float:
    refused = REFUSED.get(path.parent.parent.name)
    if refused:
        with pytest.raises(UnsupportedOpError, match=refused):
            load_model(path)
        return 0.0
    model = load_model(path)
    missing = [op for op in model.graph.op_types if op not in rules()]
    assert not missing, f"{path.name}: the importer emits ops with no rule: {missing}"
    return differential_check(model, unit_box_spec(model), seed=0, n_random=8)


@pytest.mark.parametrize("path", _first_per_benchmark(ALL_MODELS), ids=lambda p: p.name)
def test_one_model_per_benchmark(path, benchmarks_dir):
    assert check_model(path) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_MODELS, ids=lambda p: p.name)
def test_every_benchmark_model(path, benchmarks_dir):
    assert check_model(path) <= 1e-4
