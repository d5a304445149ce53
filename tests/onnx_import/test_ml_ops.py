"""scikit-learn's operators (``ai.onnx.ml``, converters/ml.py) against onnxruntime on every
output, labels included; the refusals name what is refused; ``verify`` answers on a model
built as skl2onnx writes an MLP classifier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.onnx_import.onnx_util import compare, make_model, ort_outputs, rand
from tests.onnx_import.op_models import X, ml_classifier, ml_model
from verifier.config import VerifyConfig
from verifier.errors import ModelError, UnsupportedOpError
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify

BOTH = ("label", "y")
THREE = {"coefficients": rand(3, 4).ravel().tolist(), "intercepts": rand(3).tolist()}

CASES = {
    "scaler_one_value": lambda: ml_model("Scaler", offset=[0.5], scale=[3.0]),
    **{f"classifier_{t.lower()}": (lambda t=t: ml_classifier(kept=BOTH, post_transform=t))
       for t in ("NONE", "LOGISTIC", "SOFTMAX")},
    "classifier_labels": lambda: ml_classifier(kept=BOTH, classlabels_ints=[3, 7, 9]),
    "classifier_unsorted_labels": lambda: ml_classifier(kept=BOTH, classlabels_ints=[9, 3, 7]),
    **{f"binary_{t.lower()}": (lambda t=t: ml_classifier(
        kept=BOTH, post_transform=t, coefficients=rand(1, 4).ravel().tolist(),
        intercepts=[0.1], classlabels_ints=[4, 6])) for t in ("NONE", "LOGISTIC", "SOFTMAX")},
    "regressor_one": lambda: ml_model("LinearRegressor", coefficients=rand(1, 4).ravel().tolist(),
                                      intercepts=[0.3]),
    "regressor_three": lambda: ml_model("LinearRegressor", targets=3, **THREE),
    **{f"normalizer_{n.lower()}": (lambda n=n: ml_model("Normalizer", norm=n))
       for n in ("MAX", "L1", "L2")},
    "imputer_nan": lambda: ml_model("Imputer", replaced_value_float=float("nan"),
                                    imputed_value_floats=[0.5]),
    "imputer_value": lambda: ml_model("Imputer", replaced_value_float=0.0,
                                      imputed_value_floats=[1.0, 2.0, 3.0, 4.0]),
    "binarizer": lambda: ml_model("Binarizer", threshold=-0.5),
    "extractor_columns": lambda: make_model(
        [helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml")],
        X, ["y"], {"i": np.array([3, 0, 3], np.int64)}, opset=17),
}


def _int_label(model: onnx.ModelProto) -> onnx.ModelProto:
    for out in model.graph.output:
        if out.name == "label":
            out.type.tensor_type.elem_type = onnx.TensorProto.INT64
    return model


def _with_ml(model: onnx.ModelProto) -> onnx.ModelProto:
    if not any(e.domain == "ai.onnx.ml" for e in model.opset_import):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_onnxruntime(case):
    # positive inputs too: a MAX norm of a row of negatives, scores crossing 0
    for low, high in ((-2.0, 2.0), (0.25, 2.0)):
        compare(_with_ml(CASES[case]()), n=16, low=low, high=high)


def test_the_label_follows_the_raw_scores_where_sigmoids_saturate():
    # both Sigmoids round to 1.0: onnxruntime's label is still the larger raw score's
    model = ml_classifier(kept=BOTH, post_transform="LOGISTIC",
                          coefficients=np.eye(3, 4).ravel().tolist(), intercepts=[0.0] * 3)
    data = model.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    import torch

    from bounds.engine.forward import run_graph

    x = np.array([[20.0, 25.0, 3.0, 0.0]], np.float32)
    label = run_graph(graph, torch.from_numpy(x))[0]
    assert int(label.reshape(-1)[0]) == 1 == int(ort_outputs(model, [{"x": x}])[0][0][0])


def test_imputer_replaces_exactly_the_value():
    # random samples never hit the replaced value: inputs that do, and their neighbours
    model = _with_ml(ml_model("Imputer", replaced_value_float=0.25,
                              imputed_value_floats=[1.0, 2.0, 3.0, 4.0]))
    data = model.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    import torch

    from bounds.engine.forward import run_graph

    below = float(np.nextafter(np.float32(0.25), np.float32(0)))
    x = np.array([[0.25, below, 0.25, -0.25]], np.float32)
    ours = run_graph(graph, torch.from_numpy(x))[0].numpy().reshape(-1)
    ref = ort_outputs(model, [{"x": x}])[0][0].reshape(-1)
    np.testing.assert_array_equal(ours.astype(np.float32), ref)
    assert ref.tolist() == [1.0, below, 3.0, -0.25]


@pytest.mark.parametrize("build,words", [
    (lambda: ml_classifier(post_transform="PROBIT"), ["PROBIT"]),
    (lambda: ml_model("LinearClassifier", outputs=("label", "y"), kept=("y",),
                      classlabels_strings=["a", "b", "c"], **THREE), ["string class labels"]),
    (lambda: ml_model("ZipMap", classlabels_int64s=[0, 1, 2, 3]), ["ZipMap", "zipmap"]),
    (lambda: ml_model("Normalizer", norm="L3"), ["norm 'L3'"]),
    (lambda: ml_model("Imputer", imputed_value_floats=[1.0, 2.0]), ["2 imputed values"]),
    (lambda: ml_model("LinearRegressor", coefficients=[1.0, 2.0, 3.0]), ["3 coefficients"]),
])
def test_refusals_name_the_problem(build, words):
    data = build().SerializeToString()
    with pytest.raises((ModelError, UnsupportedOpError)) as err:
        import_proto(onnx.load_model_from_string(data), data)
    assert all(w in str(err.value) for w in words), str(err.value)


def _sklearn_mlp() -> onnx.ModelProto:
    """Scaler -> MatMul, Add, Relu -> MatMul, Add -> Softmax -> probabilities, and the label
    read from a table at their ArgMax, as skl2onnx writes an MLPClassifier (zipmap off)."""
    rng = np.random.default_rng(5)
    ml = "ai.onnx.ml"
    nodes = [helper.make_node("Scaler", ["x"], ["s"], domain=ml, offset=[0.1, 0.0, -0.2, 0.3],
                              scale=[1.5, 0.8, 1.2, 1.0]),
             helper.make_node("MatMul", ["s", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["ob"]),
             helper.make_node("Softmax", ["ob"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["probabilities"], ["a"], axis=1),
             helper.make_node("ArrayFeatureExtractor", ["classes", "a"], ["c"], domain=ml),
             helper.make_node("Reshape", ["c", "flat"], ["cr"]),
             helper.make_node("Cast", ["cr"], ["label"], to=onnx.TensorProto.INT64)]
    inits = {"w1": rng.normal(size=(4, 8)).astype(np.float32),
             "b1": rng.normal(size=8).astype(np.float32),
             "w2": rng.normal(size=(8, 3)).astype(np.float32),
             "b2": np.zeros(3, np.float32), "classes": np.array([10, 20, 30], np.int64),
             "flat": np.array([-1], np.int64)}
    return _int_label(_with_ml(make_model(nodes, X, ["label", "probabilities"], inits,
                                          opset=17)))


def test_verify_answers_on_an_sklearn_style_mlp(tmp_path):
    model = _sklearn_mlp()
    compare(model, n=16)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    x = np.array([[0.2, -0.4, 0.6, 0.1]], np.float32)
    label, probs = ort_outputs(model, [{"x": x}])[0]
    top = int(np.argmax(probs))
    assert int(label[0]) == (top + 1) * 10

    def spec(eps: float, claim: str) -> str:
        lines = [f"(declare-const X_{i} Real)" for i in range(4)]
        lines += [f"(declare-const Y_{i} Real)" for i in range(4)]  # label, 3 probabilities
        for i, v in enumerate(x.ravel().tolist()):
            lines += [f"(assert (>= X_{i} {v - eps!r}))", f"(assert (<= X_{i} {v + eps!r}))"]
        return "\n".join([*lines, claim]) + "\n"

    # another label somewhere in a wide box: found and re-checked; the top probability stays
    # above 0 in a small one; the label never leaves the table's range (sorted labels: steps)
    other = "(<= Y_0 25.0)" if top == 2 else f"(>= Y_0 {(top + 1) * 10 + 5}.0)"
    sat = tmp_path / "sat.vnnlib"
    sat.write_text(spec(3.0, f"(assert {other})"))
    found = verify(str(path), str(sat), VerifyConfig(timeout=30.0))
    assert found.verdict == "sat", found
    unsat = tmp_path / "unsat.vnnlib"
    unsat.write_text(spec(0.01, f"(assert (<= Y_{top + 1} 0.0))"))
    assert verify(str(path), str(unsat), VerifyConfig(timeout=30.0)).verdict == "unsat"
    outside = tmp_path / "outside.vnnlib"
    outside.write_text(spec(3.0, "(assert (<= Y_0 5.0))"))
    assert verify(str(path), str(outside), VerifyConfig(timeout=30.0)).verdict == "unsat"
