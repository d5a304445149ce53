"""A symbolic sequence length fixed from the spec's input count (verifier.onnx_import.
symbolic_axes): the pinned model imports and agrees with onnxruntime, verify answers on it,
and the cases the count cannot settle are refused naming the dimensions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.cli.cli_util import run_nncert
from tests.onnx_import.onnx_util import (
    FEATURES,
    compare,
    ort_outputs,
    sequence_model,
    sequence_spec,
)
from verifier.config import VerifyConfig
from verifier.errors import ModelError
from verifier.onnx_import.symbolic_axes import pin_symbolic_axes
from verifier.pipeline import verify


def _dims(model: onnx.ModelProto, i: int = 0) -> list:
    return [d.dim_value or d.dim_param for d in model.graph.input[i].type.tensor_type.shape.dim]


def test_the_spec_count_fixes_the_sequence_length_and_the_import_matches_onnxruntime():
    model = sequence_model()
    assert pin_symbolic_axes(model, 5 * FEATURES)
    assert _dims(model) == ["N", 5, FEATURES]  # the batch axis stays symbolic (read as 1)
    compare(model)


def test_other_inputs_count_before_the_unknown():
    model = sequence_model(extra={"z": (1, 2)})
    assert pin_symbolic_axes(model, 4 * FEATURES + 2)
    assert _dims(model) == ["N", 4, FEATURES] and _dims(model, 1) == [1, 2]
    compare(model)


@pytest.mark.parametrize("length", [5, 0, -1])  # 0 and -1: static, the importer refuses them
def test_nothing_to_fix_leaves_the_model_alone(length):
    model = sequence_model(dims=("N", length, FEATURES))
    before = model.SerializeToString()
    assert not pin_symbolic_axes(model, 5 * FEATURES)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("dims,n,words", [
    (("N", "seq", "feat"), 12, ["'seq'", "'feat'", "fixes one only"]),
    (("N", "seq", FEATURES), 13, ["'seq'", "13 input values do not fill it"]),
    (("N", "seq", FEATURES), 0, ["'seq'", "0 input values"]),
])
def test_what_the_count_cannot_settle_is_refused_by_name(dims, n, words):
    with pytest.raises(ModelError) as err:
        pin_symbolic_axes(sequence_model(dims=dims), n, "m.onnx")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_verify_answers_on_a_model_with_a_dynamic_sequence_length(tmp_path):
    model = sequence_model()
    path = tmp_path / "seq.onnx"
    onnx.save(model, path)
    center = np.linspace(-1, 1, 6 * FEATURES, dtype=np.float32).reshape(1, 6, FEATURES)
    y0 = float(ort_outputs(model, [{"x": center}])[0][0].ravel()[0])
    sat, unsat = tmp_path / "sat.vnnlib", tmp_path / "unsat.vnnlib"
    sat.write_text(sequence_spec(center, 0.01, y0 - 0.5))  # the centre itself violates it
    unsat.write_text(sequence_spec(center, 0.01, y0 + 100.0))
    found = verify(str(path), str(sat), VerifyConfig(timeout=30.0))
    assert found.verdict == "sat" and np.asarray(found.counterexample.x).size == 6 * FEATURES
    assert verify(str(path), str(unsat), VerifyConfig(timeout=30.0)).verdict == "unsat"
    proc = run_nncert("verify", path, unsat, "--timeout", "30")  # the CLI's own load path
    assert proc.returncode == 0 and proc.stdout == "unsat\n", proc.stderr
