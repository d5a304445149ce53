"""Tree ensembles (``ai.onnx.ml`` TreeEnsembleClassifier / Regressor, converters/trees.py):
every configuration against onnxruntime, also on the thresholds themselves (which side each
branch mode sends them), refusals by name, and ``verify`` deciding small and wide boxes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.onnx_import.onnx_util import compare, ort_outputs
from tests.onnx_import.op_models import make_tree_ensemble
from verifier.config import VerifyConfig
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify

CLASSIFIER, REGRESSOR = "TreeEnsembleClassifier", "TreeEnsembleRegressor"
BOTH = ("label", "y")
CONFIGS = {
    "classes_none": dict(op=CLASSIFIER, kept=BOTH),
    "classes_softmax": dict(op=CLASSIFIER, post_transform="SOFTMAX", kept=BOTH),
    "classes_logistic": dict(op=CLASSIFIER, post_transform="LOGISTIC", kept=BOTH),
    "binary_signed": dict(op=CLASSIFIER, binary=True, kept=BOTH),
    "binary_probabilities": dict(op=CLASSIFIER, binary=True, kept=BOTH,
                                 weights=[[0.1], [0.9], [0.3], [0.6], [0.0], [0.2], [0.25]]),
    "binary_logistic": dict(op=CLASSIFIER, binary=True, post_transform="LOGISTIC", kept=BOTH),
    "targets_base": dict(op=REGRESSOR, outputs=2, base_values=[0.5, -1.0]),
    "target_average": dict(op=REGRESSOR, outputs=1, aggregate_function="AVERAGE"),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_onnxruntime(config):
    compare(make_tree_ensemble(**CONFIGS[config]), n=64, low=-1.5, high=1.5)


@pytest.mark.parametrize("config", ["classes_none", "targets_base"])
def test_thresholds_go_the_way_their_branch_mode_says(config):
    """Inputs exactly at the thresholds (x0 = 0.1 LEQ, x1 = -0.3 LT, x2 = 0.5 GTE, x0 = 0.8
    GT, x3 = 0.0 LEQ) and one float32 step either side."""
    from bounds.engine.forward import run_graph

    model = make_tree_ensemble(**CONFIGS[config])
    data = model.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    base = np.array([0.1, -0.3, 0.5, 0.0], np.float32)
    points = [base, np.array([0.8, -0.3, 0.0, 0.0], np.float32)]
    for p in list(points):
        for step in (-np.inf, np.inf):
            points.append(np.nextafter(p, np.float32(step)))
    for p in points:
        ref = ort_outputs(model, [{"x": p.reshape(1, 4)}])[0]
        import torch

        ours = run_graph(graph, torch.as_tensor(p).reshape(1, 1, 4).double())
        for got, want in zip(ours, ref, strict=True):
            np.testing.assert_allclose(got.numpy().ravel(), np.asarray(want, np.float64).ravel(),
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("attrs,words", [
    ({"op": REGRESSOR, "aggregate_function": "MIN"}, "aggregate_function 'MIN'"),
    ({"op": CLASSIFIER, "post_transform": "PROBIT"}, "post_transform 'PROBIT'"),
])
def test_what_is_not_converted_is_refused_by_name(attrs, words):
    model = make_tree_ensemble(**attrs)
    data = model.SerializeToString()
    with pytest.raises(UnsupportedOpError) as err:
        import_proto(onnx.load_model_from_string(data), data)
    assert words in str(err.value), str(err.value)


def test_an_equality_branch_is_refused_by_name():
    model = make_tree_ensemble(REGRESSOR, outputs=1)
    attr = next(a for a in model.graph.node[0].attribute if a.name == "nodes_modes")
    attr.strings[0] = b"BRANCH_EQ"
    data = model.SerializeToString()
    with pytest.raises(UnsupportedOpError) as err:
        import_proto(onnx.load_model_from_string(data), data)
    assert "BRANCH_EQ" in str(err.value)


def _spec(center: np.ndarray, eps: float, y_at_least: float) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(4)] + ["(declare-const Y_0 Real)"]
    for i, v in enumerate(center.tolist()):
        lines += [f"(assert (>= X_{i} {v - eps!r}))", f"(assert (<= X_{i} {v + eps!r}))"]
    return "\n".join(lines + [f"(assert (>= Y_0 {y_at_least!r}))"]) + "\n"


def test_verify_decides_a_regressor_in_small_and_wide_boxes(tmp_path):
    """A box inside one leaf per tree cannot reach a larger target (unsat); a box across
    every threshold reaches the largest leaf sum (sat, re-checked by onnxruntime)."""
    weights = [[0.0], [1.0], [2.0], [0.5], [3.0], [0.0], [1.0]]
    model = make_tree_ensemble(REGRESSOR, outputs=1, weights=weights)
    path = tmp_path / "trees.onnx"
    onnx.save(model, path)
    center = np.array([-0.5, 0.2, 0.0, -0.5], np.float32)  # leaves (0, 4) and (1, 1): 1.0
    y = float(np.ravel(ort_outputs(model, [{"x": center.reshape(1, 4)}])[0][0])[0])
    assert y == pytest.approx(1.0)
    small, wide = tmp_path / "small.vnnlib", tmp_path / "wide.vnnlib"
    small.write_text(_spec(center, 0.05, 1.5))
    wide.write_text(_spec(np.array([0.5, 0.0, 0.5, 0.0], np.float32), 1.0, 3.5))
    assert verify(str(path), str(small), VerifyConfig(timeout=30.0)).verdict == "unsat"
    found = verify(str(path), str(wide), VerifyConfig(timeout=30.0))
    assert found.verdict == "sat" and float(np.asarray(found.counterexample.y).ravel()[0]) >= 3.5


@pytest.mark.parametrize("child,words", [(99, "tree 0 has 2 roots"),
                                         (0, "a weight for tree 0 node 3")])
def test_a_broken_tree_is_a_model_error(child, words):
    """Tree 0's node 2 (a GTE branch) points to a node that does not exist (its own true
    child is left without a parent: two roots), or back to the root (a cycle: the root is
    a child, and the walk from the one parentless node finds the other leaves' weights
    orphaned)."""
    from verifier.errors import ModelError

    model = make_tree_ensemble(REGRESSOR, outputs=1)
    attr = next(a for a in model.graph.node[0].attribute if a.name == "nodes_truenodeids")
    attr.ints[2] = child
    data = model.SerializeToString()
    with pytest.raises(ModelError) as err:
        import_proto(onnx.load_model_from_string(data), data)
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize("equal", [True, False])
def test_crown_bounds_a_margin_per_leaf(equal):
    """A linear function of the class scores (here score 0 - score 1) is bounded per tree by
    its least value over the reachable leaves: with every leaf scoring classes 0 and 1 alike
    (``equal``) the margin is 0 wherever x lies, which CROWN finds (up to the sum's float32
    allowance) while the per-class intervals put it near -1.7; with random leaves, never
    below the intervals' bound and never above onnxruntime's margins in the box."""
    import torch

    from bounds.engine.deadline import engine_deadline
    from bounds.engine.spec_bounds import BoundOptions, bound_spec
    from bounds.types import Interval

    weights = np.random.default_rng(4).uniform(0, 1, (7, 3))
    if equal:
        weights[:, 1] = weights[:, 0]
    model = make_tree_ensemble(CLASSIFIER, weights=weights, kept=("y",))
    graph = import_proto(onnx.load_model_from_string(model.SerializeToString()),
                         model.SerializeToString()).graph
    lo = np.array([-0.5, -1.0, 0.0, -0.5], np.float32)  # reaches leaves of both trees
    hi = np.array([1.0, 0.5, 1.0, 0.5], np.float32)
    box = Interval(torch.from_numpy(lo.astype(np.float64)).reshape(1, 1, 4),
                   torch.from_numpy(hi.astype(np.float64)).reshape(1, 1, 4))
    coef = torch.tensor([[[1.0, -1.0, 0.0]]], dtype=torch.float64)
    rhs = torch.zeros(1, 1, dtype=torch.float64)
    with engine_deadline(None):
        ibp, crown = (float(bound_spec(graph, box, coef, rhs, BoundOptions(method=m)).lower)
                      for m in ("ibp", "crown"))
    assert crown >= ibp
    if equal:
        assert crown > -1e-5 and ibp < -0.5, (crown, ibp)
    xs = np.random.default_rng(0).uniform(lo, hi, (200, 4)).astype(np.float32)
    ys = np.concatenate([out[0] for out in ort_outputs(model, [{"x": x.reshape(1, 4)}
                                                               for x in xs])])
    assert (ys @ np.array([1.0, -1.0, 0.0])).min() >= crown - 1e-6


@pytest.mark.parametrize("lo,hi,reached", [
    # x0 <= 0.1 (LEQ) at the box's upper end: only the true branch's leaves
    ([-0.5, -1.0, 0.0, 0.5], [0.1, 1.0, 1.0, 1.0], {(0, 3), (0, 4)}),
    # x1 < -0.3 (LT) at the box's lower end: not leaf (0, 3)
    ([-0.5, -0.3, 0.0, 0.5], [0.1, 1.0, 1.0, 1.0], {(0, 4)}),
    # x2 >= 0.5 (GTE) at the box's upper end: leaf (0, 5) still
    ([0.5, 0.0, 0.0, 0.5], [0.6, 0.5, 0.5, 1.0], {(0, 5), (0, 8)}),
    # x0 > 0.8 (GT) at the box's upper end: not leaf (0, 7)
    ([0.5, 0.0, 0.0, 0.5], [0.8, 0.5, 0.4, 1.0], {(0, 8)}),
])
def test_a_box_ending_on_a_threshold_reaches_the_side_it_holds(lo, hi, reached):
    """Each leaf of tree 0 scores its own power of two (tree 1 scores 0): the interval of the
    sum names the leaves the box reaches, strict ends kept; onnxruntime at the box's corners
    agrees."""
    import torch

    from bounds.registry import rules
    from bounds.types import Interval
    from tests.onnx_import.op_models import _TREE_LEAVES

    code = {leaf: 2.0 ** k for k, leaf in enumerate(_TREE_LEAVES) if leaf[0] == 0}
    weights = [[code.get(leaf, 0.0)] for leaf in _TREE_LEAVES]
    model = make_tree_ensemble(REGRESSOR, outputs=1, weights=weights)
    graph = import_proto(onnx.load_model_from_string(model.SerializeToString()),
                         model.SerializeToString()).graph
    node = next(n for n in graph.nodes if n.op == "TreeLeaves")
    box = Interval(torch.tensor([[lo]], dtype=torch.float64), torch.tensor([[hi]],
                                                                         dtype=torch.float64))
    args = [box] + [torch.as_tensor(np.asarray(node.consts[k])) for k in (1, 2, 3, 4)]
    out = rules().get("TreeLeaves").ibp(node, args)
    low, high = float(out.lower[0, 0, 0, 0]), float(out.upper[0, 0, 0, 0])
    assert (low, high) == (min(code[r] for r in reached), max(code[r] for r in reached))
    corners = [np.where([(k >> i) & 1 for i in range(4)], hi, lo).astype(np.float32)
               for k in range(16)]
    seen = {float(np.ravel(y[0])[0]) for y in ort_outputs(model, [{"x": c.reshape(1, 4)}
                                                                  for c in corners])}
    assert seen <= {code[r] for r in reached}
