"""Honest ``supports``: every op that ``nncert supports --onnx-operators`` lists imports with an
input-dependent operand, agrees with onnxruntime, and gets a verdict from ``verify``."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from tests.onnx_import.onnx_util import compare
from tests.onnx_import.op_models import OP_MODELS
from verifier.cli.supports_cmd import answer
from verifier.config import VerifyConfig
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify
from verifier.spec.types import InputRegion, OutputCondition, Spec

LISTED = answer("onnx-operators")


def test_every_listed_op_has_a_model():
    missing = sorted(set(LISTED) - set(OP_MODELS))
    assert not missing, f"listed by supports but untested: {missing}"


def test_constant_only_ops_are_not_listed():
    assert "Range" not in LISTED and "ConstantOfShape" not in LISTED


def _spec(model, low: float, high: float, rhs: float) -> Spec:
    """Unsafe set: output 0 <= rhs, over the box [low, high]^n."""
    n_in = sum(math.prod(t.shape) for t in model.graph.inputs)
    n_out = sum(math.prod(t.shape) for t in model.graph.outputs)
    coef = np.zeros((1, 1, n_out))
    coef[0, 0, 0] = 1.0
    region = InputRegion(np.full(n_in, low), np.full(n_in, high),
                         OutputCondition(coef, np.array([[rhs]])))
    return Spec((region,), n_in, n_out)


@pytest.mark.parametrize("op", sorted(OP_MODELS))
def test_listed_op_imports_matches_and_verifies(op):
    build, low, high = OP_MODELS[op]
    proto = build()
    compare(proto, n=8, low=low, high=high)
    data = proto.SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    # a threshold far below (unsat) and one the outputs cross (sat or unknown)
    for rhs in (-1e3, 0.25):
        result = verify(model, _spec(model, low, high, rhs), VerifyConfig(timeout=5.0))
        assert result.verdict in ("sat", "unsat", "unknown", "timeout"), (op, result)
        if rhs == -1e3:
            assert result.verdict != "sat", (op, result)
