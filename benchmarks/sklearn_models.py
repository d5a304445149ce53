"""scikit-learn models as a user exports them with skl2onnx, each instance verified by
``nncert verify`` in its own process, optionally against a baseline tree in the same run.

    python -m benchmarks.sklearn_models [--families svm forest] [--timeout 30]
        [--dir /tmp/nncert-sklearn] [--compare /work/before] [--nncert-python PY]

Needs scikit-learn and skl2onnx in the interpreter that runs it (they are not nncert's
dependencies: ``pip install scikit-learn skl2onnx``); ``--nncert-python`` names the
interpreter that has nncert's own (torch, onnxruntime), default this one. Models, trained
with fixed seeds on data scikit-learn bundles or generates (no download):

* ``svm``: SVC with RBF, polynomial and linear kernels on a 3-class, 4-feature set; a binary
  SVC with a sigmoid kernel; SVR with RBF and polynomial kernels; an RBF SVC on the 8x8
  digits (64 features, 10 classes). Specs: the label (Y_0) stays, or the regression value
  moves by less than max(1, 5%).
* ``forest``: a random forest (100 trees, full depth) and gradient boosting (50 stages,
  depth 3) on the digits; a random forest of depth 6. Specs: the label stays.
* ``boosting``: XGBoost and LightGBM classifiers on the digits (30 trees per class) and
  regressors on a generated set, exported by onnxmltools (needs xgboost, lightgbm and
  onnxmltools).

Boxes are L_inf balls around training or held-out points, three radii each. Prints one line
per instance (verdict and seconds per tree) and the counts and total seconds per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import fresh_runs


def _svm_models():
    from sklearn.datasets import load_digits, make_classification, make_regression
    from sklearn.svm import SVC, SVR

    x, y = make_classification(n_samples=200, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=3, random_state=0)
    xr, yr = make_regression(n_samples=200, n_features=4, random_state=0)
    digits = load_digits()
    xd, yd = digits.data[:1200], digits.target[:1200]
    sets = {"svc3_rbf": (SVC(kernel="rbf", gamma=0.3), x, y, (0.01, 0.05, 0.2)),
            "svc3_poly": (SVC(kernel="poly", degree=3), x, y, (0.01, 0.05, 0.2)),
            "svc3_linear": (SVC(kernel="linear"), x, y, (0.01, 0.05, 0.2)),
            "svc2_sigmoid": (SVC(kernel="sigmoid", gamma=0.1), x, (y > 0).astype(int),
                             (0.01, 0.05, 0.2)),
            "svr_rbf": (SVR(kernel="rbf", C=10), xr, yr, (0.01, 0.05, 0.2)),
            "svr_poly": (SVR(kernel="poly"), xr, yr, (0.01, 0.05, 0.2)),
            "digits_svc": (SVC(kernel="rbf"), xd, yd, (0.1, 0.5, 1.0))}
    return {name: (model.fit(data, target), data, radii)
            for name, (model, data, target, radii) in sets.items()}


def _forest_models():
    from sklearn.datasets import load_digits
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    digits = load_digits()
    x, y = digits.data[:1200], digits.target[:1200]
    held_out = digits.data[1200:]
    sets = {"digits_rf100": RandomForestClassifier(n_estimators=100, random_state=0),
            "digits_rf100_depth6": RandomForestClassifier(n_estimators=100, max_depth=6,
                                                          random_state=0),
            "digits_gb50": GradientBoostingClassifier(n_estimators=50, max_depth=3,
                                                      random_state=0)}
    return {name: (model.fit(x, y), held_out, (0.25, 0.5, 1.0)) for name, model in sets.items()}


def _boosting_models():
    """XGBoost and LightGBM (exported by onnxmltools): classifiers on the digits, regressors
    on a generated set."""
    import lightgbm
    import xgboost
    from sklearn.datasets import load_digits, make_regression

    digits = load_digits()
    x, y = digits.data[:1200], digits.target[:1200]
    held_out = digits.data[1200:]
    xr, yr = make_regression(n_samples=300, n_features=6, noise=5.0, random_state=0)
    sets = {"digits_xgb30": (xgboost.XGBClassifier(n_estimators=30, max_depth=3,
                                                   random_state=0), x, y, held_out,
                             (0.25, 0.5, 1.0)),
            "digits_lgbm30": (lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8,
                                                      random_state=0, verbose=-1),
                              x, y, held_out, (0.25, 0.5, 1.0)),
            "xgb_regressor": (xgboost.XGBRegressor(n_estimators=40, max_depth=4,
                                                   random_state=0), xr, yr, xr,
                              (0.01, 0.05, 0.2)),
            "lgbm_regressor": (lightgbm.LGBMRegressor(n_estimators=40, num_leaves=15,
                                                      random_state=0, verbose=-1),
                               xr, yr, xr, (0.01, 0.05, 0.2))}
    return {name: (model.fit(data, target), points, radii)
            for name, (model, data, target, points, radii) in sets.items()}


FAMILIES = {"svm": _svm_models, "forest": _forest_models, "boosting": _boosting_models}


def _export(model, sample: np.ndarray, path: Path) -> None:
    module = type(model).__module__
    if module.startswith(("xgboost", "lightgbm")):
        path.write_bytes(_export_boosting(model, sample.shape[1]).SerializeToString())
        return
    from skl2onnx import to_onnx

    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    path.write_bytes(to_onnx(model, sample[:1].astype(np.float32),
                             options=options).SerializeToString())


def _export_boosting(model, n_features: int):
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [("input", FloatTensorType([None, n_features]))]
    if type(model).__module__.startswith("xgboost"):
        return onnxmltools.convert_xgboost(model, initial_types=types, target_opset=15)
    return onnxmltools.convert_lightgbm(model, initial_types=types, target_opset=15,
                                        zipmap=False)


def _spec(center: np.ndarray, radius: float, outputs: list, low: float, high: float) -> str:
    """The label (first output) changes, or a regression value moves by max(1, 5%)."""
    n_out = sum(int(np.asarray(o).size) for o in outputs)
    lines = [f"(declare-const X_{i} Real)" for i in range(center.size)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(n_out)]
    for i, v in enumerate(center.tolist()):
        lines += [f"(assert (>= X_{i} {max(low, v - radius)!r}))",
                  f"(assert (<= X_{i} {min(high, v + radius)!r}))"]
    first = float(np.ravel(outputs[0])[0])
    if np.asarray(outputs[0]).dtype.kind in "iu":  # a label
        unsafe = f"(or (<= Y_0 {first - 0.5!r}) (>= Y_0 {first + 0.5!r}))"
    else:
        move = max(1.0, 0.05 * abs(first))
        unsafe = f"(or (>= Y_0 {first + move!r}) (<= Y_0 {first - move!r}))"
    return "\n".join(lines + [f"(assert {unsafe})"]) + "\n"


def build(families: list[str], folder: Path) -> list[tuple[str, Path, Path]]:
    """(model name, onnx, vnnlib) per instance: three points, three radii per model."""
    import onnxruntime as ort

    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for family in families:
        for name, (model, data, radii) in FAMILIES[family]().items():
            onnx_path = folder / f"{name}.onnx"
            _export(model, data, onnx_path)
            session = ort.InferenceSession(str(onnx_path))
            feed = session.get_inputs()[0].name
            low, high = float(data.min()), float(data.max())
            for k in (3, 50, 120):
                center = np.asarray(data[k], dtype=np.float32)
                outputs = session.run(None, {feed: center.reshape(1, -1)})
                for radius in radii:
                    spec = folder / f"{name}_{k}_{radius}.vnnlib"
                    spec.write_text(_spec(center, radius, outputs, low, high))
                    instances.append((name, onnx_path, spec))
    return instances


def main() -> None:
    fresh_runs.main(__doc__.splitlines()[0], list(FAMILIES), "/tmp/nncert-sklearn", build)

if __name__ == "__main__":
    main()
