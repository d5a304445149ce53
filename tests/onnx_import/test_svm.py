"""Kernel SVMs (``ai.onnx.ml`` SVMClassifier / SVMRegressor, converters/svm.py): every kernel
and output form against onnxruntime, the labels on the vote ties' side, refusals by name,
broken attributes as model errors, and ``verify`` deciding small and wide boxes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.onnx_import.onnx_util import compare, ort_outputs
from tests.onnx_import.op_models import make_svm
from verifier.config import VerifyConfig
from verifier.errors import ModelError, UnsupportedOpError
from verifier.onnx_import.converters.svm import pair_weights, vote_matrix
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify

CLASSIFIER, REGRESSOR = "SVMClassifier", "SVMRegressor"
CONFIGS = {
    **{f"classes_{k.lower()}": dict(op=CLASSIFIER, kernel=k)
       for k in ("RBF", "POLY", "SIGMOID", "LINEAR")},
    "four_classes": dict(op=CLASSIFIER, classes=4),
    "binary_rbf": dict(op=CLASSIFIER, classes=2),
    "binary_poly": dict(op=CLASSIFIER, classes=2, kernel="POLY"),
    "poly_no_coef0_degree_2": dict(op=CLASSIFIER, kernel="POLY", kernel_params=[0.7, 0.0, 2.0]),
    **{f"regressor_{k.lower()}": dict(op=REGRESSOR, kernel=k)
       for k in ("RBF", "POLY", "SIGMOID", "LINEAR")},
    "one_class": dict(op=REGRESSOR, one_class=1),
    "regressor_without_vectors": dict(op=REGRESSOR, n_supports=None, support_vectors=None,
                                      coefficients=[0.5, -1.0, 2.0, 0.25]),
}


def _load(model: onnx.ModelProto):
    data = model.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_onnxruntime(config):
    attrs = dict(CONFIGS[config])
    compare(make_svm(attrs.pop("op"), **attrs), n=64, low=-1.5, high=1.5)


def test_pairs_and_votes_follow_libsvm_order():
    """Three classes with 1, 2, 1 vectors: pair (0, 1) reads row 0 on class 1's vectors and
    row 0 on class 0's; (0, 2) row 1 on class 0's, row 0 on class 2's; (1, 2) row 1 on both
    classes' vectors."""
    coefficients = np.arange(8, dtype=np.float32).reshape(2, 4)  # [classes - 1, vectors]
    assert pair_weights(coefficients, [1, 2, 1]).tolist() == [
        [0, 1, 2, 0], [4, 0, 0, 3], [0, 5, 6, 7]]
    weight, bias = vote_matrix(3)
    # pairs (0, 1), (0, 2), (1, 2) won by 0, 2, 1: votes 1, 1, 1
    assert (weight @ np.array([1.0, 0.0, 1.0]) + bias).tolist() == [1.0, 1.0, 1.0]
    assert (weight @ np.zeros(3) + bias).tolist() == [0.0, 1.0, 2.0]


def test_a_vote_tie_gives_the_first_class():
    """Decision values that make every class win once (a three-way tie): onnxruntime and the
    import both answer the first class. rho carries the decisions: linear kernel, zero
    coefficients."""
    model = make_svm(CLASSIFIER, kernel="LINEAR", coefficients=[0.0] * 16,
                     rho=[1.0, -1.0, 1.0])
    x = np.zeros((1, 4), np.float32)
    want = ort_outputs(model, [{"x": x}])[0]
    assert int(np.ravel(want[0])[0]) == 0
    compare(model, n=4)


@pytest.mark.parametrize("attrs,words", [
    ({"prob_a": [0.5, 0.5, 0.5], "prob_b": [0.1, 0.1, 0.1]}, "probability estimates"),
    ({"post_transform": "SOFTMAX"}, "post_transform 'SOFTMAX'"),
    ({"kernel_type": "CHI2"}, "kernel_type 'CHI2'"),
    ({"vectors_per_class": None}, "liblinear mode"),
])
def test_what_is_not_converted_is_refused_by_name(attrs, words):
    with pytest.raises(UnsupportedOpError) as err:
        _load(make_svm(CLASSIFIER, **attrs))
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize("op,attrs,words", [
    (CLASSIFIER, {"rho": [0.1]}, "1 rho values for 3 class pairs"),
    (CLASSIFIER, {"coefficients": [0.5] * 7}, "7 coefficients for 2 rows of 8 support vectors"),
    (CLASSIFIER, {"vectors_per_class": [3, 2]}, "vectors_per_class [3, 2] for 3 class labels"),
    (REGRESSOR, {"support_vectors": [0.5] * 19}, "19 support vector values for 5 vectors"),
    (REGRESSOR, {"kernel_params": [0.5]}, "kernel_params has 1 values"),
])
def test_broken_attributes_are_model_errors(op, attrs, words):
    with pytest.raises(ModelError) as err:
        _load(make_svm(op, **attrs))
    assert words in str(err.value), str(err.value)


def _spec(center: np.ndarray, eps: float, outputs: int, unsafe: str) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(4)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(outputs)]
    for i, v in enumerate(center.tolist()):
        lines += [f"(assert (>= X_{i} {v - eps!r}))", f"(assert (<= X_{i} {v + eps!r}))"]
    return "\n".join(lines + [f"(assert {unsafe})"]) + "\n"


def test_verify_decides_a_classifier_label_in_small_and_wide_boxes(tmp_path):
    """An RBF classifier's label (Y_0) stays put in a small box around a point (unsat) and
    changes somewhere in the box [-1.5, 1.5]^4 (sat, re-checked by onnxruntime)."""
    model = make_svm(CLASSIFIER)
    path = tmp_path / "svm.onnx"
    onnx.save(model, path)
    center = np.array([0.3, -0.2, 0.5, 0.1], np.float32)
    label = int(np.ravel(ort_outputs(model, [{"x": center.reshape(1, 4)}])[0][0])[0])
    other = f"(or (<= Y_0 {label - 0.5}) (>= Y_0 {label + 0.5}))"
    small, wide = tmp_path / "small.vnnlib", tmp_path / "wide.vnnlib"
    small.write_text(_spec(center, 0.01, 4, other))
    wide.write_text(_spec(np.zeros(4, np.float32), 1.5, 4, other))
    assert verify(str(path), str(small), VerifyConfig(timeout=30.0)).verdict == "unsat"
    found = verify(str(path), str(wide), VerifyConfig(timeout=30.0))
    assert found.verdict == "sat"
    assert int(round(float(np.asarray(found.counterexample.y).ravel()[0]))) != label


def test_verify_bounds_a_regressor(tmp_path):
    """An RBF regressor's value moves less than 0.5 in a small box (unsat) and reaches 0.5
    above its centre value in [-1.5, 1.5]^4 (sat)."""
    model = make_svm(REGRESSOR)
    path = tmp_path / "svr.onnx"
    onnx.save(model, path)
    center = np.zeros(4, np.float32)
    y = float(np.ravel(ort_outputs(model, [{"x": center.reshape(1, 4)}])[0][0])[0])
    small, wide = tmp_path / "small.vnnlib", tmp_path / "wide.vnnlib"
    small.write_text(_spec(center, 0.01, 1, f"(or (>= Y_0 {y + 0.5!r}) (<= Y_0 {y - 0.5!r}))"))
    wide.write_text(_spec(center, 1.5, 1, f"(>= Y_0 {y + 0.5!r})"))
    assert verify(str(path), str(small), VerifyConfig(timeout=30.0)).verdict == "unsat"
    found = verify(str(path), str(wide), VerifyConfig(timeout=30.0))
    assert found.verdict == "sat" and float(np.asarray(found.counterexample.y).ravel()[0]) >= y
