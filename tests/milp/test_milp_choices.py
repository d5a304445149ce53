"""MILP encodings of the choosing ops (verifier/milp/choices.py): a tree ensemble's leaves and
ArgMax, exact against the model on every leaf combination the box holds; the search
encoding's points taken the same way by onnxruntime; ``auto`` deciding a forest by MILP."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

from bounds.graph import Node
from tests.milp.test_milp_activations import _min_output, _sampled, _value_at
from tests.onnx_import.op_models import make_tree_ensemble
from verifier.config import VerifyConfig
from verifier.milp.choices import argmax_binaries, leaf_binaries
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify

REGRESSOR, CLASSIFIER = "TreeEnsembleRegressor", "TreeEnsembleClassifier"
# every threshold of the two test trees, per feature (x0: 0.1 and 0.8, x1: -0.3, x2: 0.5,
# x3: 0.0)
THRESHOLDS = {0: (0.1, 0.8), 1: (-0.3,), 2: (0.5,), 3: (0.0,)}


def _load(proto):
    data = proto.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def _cell_points(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """One point inside each cell the thresholds cut the box into (midpoints between the
    sorted ends): every leaf combination the box holds."""
    axes = []
    for f in range(4):
        ends = sorted({lower[f], upper[f], *(t for t in THRESHOLDS[f] if lower[f] < t < upper[f])})
        axes.append([(a + b) / 2 for a, b in itertools.pairwise(ends)])
    return np.array(list(itertools.product(*axes)))


@pytest.mark.parametrize("seed", range(4))
def test_leaf_encoding_is_exact_on_the_box(seed):
    """The MILP's minimum of a regressor's two targets (a random combination) is the least
    value over the box's cells, attained at the solver's point."""
    rng = np.random.default_rng(seed)
    model = _load(make_tree_ensemble(REGRESSOR, outputs=2))
    lower = rng.uniform(-1.0, 0.4, 4)
    upper = lower + rng.uniform(0.3, 1.2, 4)
    coef = rng.normal(size=2)
    value, x, enc = _min_output(model, lower, upper, coef)
    assert enc.exact and enc.n_unstable > 0
    cells = [_value_at(model, p, coef) for p in _cell_points(lower, upper)]
    assert value == pytest.approx(min(cells), abs=1e-6)
    assert value <= _sampled(model, lower, upper, coef).min() + 1e-7
    # the point is in the box; on a threshold it may stand for the cell on either side
    assert np.all(x >= lower - 1e-9) and np.all(x <= upper + 1e-9)


def test_argmax_encoding_picks_a_largest_score():
    """A classifier's label (ArgMax of its summed leaf scores): the MILP's largest and least
    label over a box are labels of some cell of it."""
    weights = np.random.default_rng(7).uniform(0, 1, (7, 3))
    model = _load(make_tree_ensemble(CLASSIFIER, weights=weights, kept=("label",)))
    lower, upper = np.array([-0.5, -1.0, 0.0, -0.5]), np.array([1.0, 0.5, 1.0, 0.5])
    labels = {round(_value_at(model, p, np.ones(1))) for p in _cell_points(lower, upper)}
    assert len(labels) > 1
    for sign in (1.0, -1.0):
        value, x, _ = _min_output(model, lower, upper, np.array([sign]))
        assert sign * value == (min(labels) if sign > 0 else max(labels))


def test_binaries_are_counted_as_the_encoding_adds_them():
    model = _load(make_tree_ensemble(REGRESSOR, outputs=1))
    node = next(n for n in model.graph.nodes if n.op == "TreeLeaves")
    inside = leaf_binaries(node, np.array([-0.5, 0.0, 0.0, 0.2]), np.array([-0.4, 0.1, 0.1, 0.3]))
    across = leaf_binaries(node, np.full(4, -2.0), np.full(4, 2.0))
    assert inside == 0 and across == 7  # one leaf per tree; every leaf of both trees
    argmax = Node("a", "ArgMax", ("x",), (1,), {"axis": 1, "keepdims": 0, "last": 0}, {})
    assert argmax_binaries(argmax, np.array([0.0, 0.5, -2.0]), np.array([1.0, 0.6, -1.0]),
                           (1, 3)) == 2


def _box_spec(lower, upper, outputs: int, unsafe: str) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(4)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(outputs)]
    for i in range(4):
        lines += [f"(assert (>= X_{i} {lower[i]!r}))", f"(assert (<= X_{i} {upper[i]!r}))"]
    return "\n".join(lines + [f"(assert {unsafe})"]) + "\n"


@pytest.mark.parametrize("threshold,verdict", [(2.5, "unsat"), (1.9, "sat")])
def test_auto_decides_a_forest_by_milp(tmp_path, threshold, verdict):
    """Tree 1 split on x0 at 0 (instead of x3): tree 0's leaf 1.0 needs x0 > 0.1, tree 1's
    leaf 2.0 needs x0 <= 0, so the sum is at most 2.0 where the per-tree bounds say 3.0. MILP
    settles both thresholds (the sat one re-checked by onnxruntime)."""
    weights = [[0.0], [0.0], [1.0], [0.0], [0.0], [2.0], [0.0]]
    proto = make_tree_ensemble(REGRESSOR, outputs=1, weights=weights)
    features = next(a for a in proto.graph.node[0].attribute if a.name == "nodes_featureids")
    features.ints[9] = 0  # tree 1's root
    path = tmp_path / "forest.onnx"
    onnx.save(proto, path)
    spec = tmp_path / "s.vnnlib"
    spec.write_text(_box_spec([-1.0] * 4, [1.0] * 4, 1, f"(>= Y_0 {threshold})"))
    result = verify(str(path), str(spec), VerifyConfig(timeout=30.0))
    assert result.verdict == verdict, result
    assert result.method == "milp" or verdict == "sat", result
