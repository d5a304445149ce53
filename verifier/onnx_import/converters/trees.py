"""Tree ensembles of ``ai.onnx.ml`` (TreeEnsembleClassifier, TreeEnsembleRegressor): random
forests, gradient-boosted trees and single decision trees exported by skl2onnx.

Each leaf becomes the box of feature values its path admits (the tightest end per feature,
strict or not by the branch modes LEQ, LT, GTE, GT); a ``TreeLeaves`` node gives every tree's
leaf values (``bounds/rules/trees.py``), a ReduceSum adds the trees (its float32 allowance
covers onnxruntime's sums in any order), then the base values, AVERAGE's division, and the
classifier's post-transform and label as for LinearClassifier (``converters/ml.py``). A
binary classifier with one score column s follows onnxruntime (measured): scores (1 - p, p)
with p = sigmoid(s) under LOGISTIC; under NONE, (1 - s, s) when every leaf weight is >= 0
(probabilities) and (-s, s) otherwise; the second label where s > 0.5 in the first NONE
case, else where s > 0.

Refused by name: BRANCH_EQ / BRANCH_NEQ, aggregate MIN / MAX, string labels, and the
transforms LinearClassifier refuses. A missing value (NaN) never lies in a spec's box, so
the missing-value tracks do not matter."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.converters.ml import (
    _binary,
    _features,
    _label_of,
    _labels,
    _post_transform,
)
from verifier.onnx_import.registry import converter, ml_op

# mode -> (feature end set on the true branch, on the false branch): (side, strict)
_BRANCHES = {"BRANCH_LEQ": (("upper", False), ("lower", True)),
             "BRANCH_LT": (("upper", True), ("lower", False)),
             "BRANCH_GTE": (("lower", False), ("upper", True)),
             "BRANCH_GT": (("lower", True), ("upper", False))}


def _attr_floats(ctx: ConvertContext, node, name: str) -> list[float] | None:
    value = ctx.attr(node, name)
    if value is None:
        value = ctx.attr(node, f"{name}_as_tensor")
    return None if value is None else np.asarray(value, dtype=np.float32).ravel().tolist()


def _mode(m) -> str:
    """A mode of the nodes_modes list (ConvertContext.attr decodes single strings only)."""
    return m.decode() if isinstance(m, bytes) else str(m)


def _tighter(end, new, side: str):
    """The tighter of two (value, strict) ends on ``side``."""
    if end is None:
        return new
    if side == "upper":
        return new if (new[0], not new[1]) < (end[0], not end[1]) else end
    return new if (new[0], new[1]) > (end[0], end[1]) else end


def _leaf_boxes(ctx: ConvertContext, node, n_features: int):
    """[(tree, node id, {feature: {side: (value, strict)}})] for every leaf, by walking each
    tree from its root."""
    tree_ids = ctx.attr(node, "nodes_treeids")
    node_ids = ctx.attr(node, "nodes_nodeids")
    features = ctx.attr(node, "nodes_featureids")
    values = _attr_floats(ctx, node, "nodes_values")
    modes = [_mode(m) for m in ctx.attr(node, "nodes_modes") or []]
    true_ids = ctx.attr(node, "nodes_truenodeids")
    false_ids = ctx.attr(node, "nodes_falsenodeids")
    fields = (tree_ids, node_ids, features, values, modes, true_ids, false_ids)
    if any(f is None for f in fields) or len({len(f) for f in fields}) != 1 or not modes:
        raise ModelError(f"{node.op_type} node {node.name!r}: the nodes_* attributes are "
                         "missing or of different lengths")
    table = {}
    for t, n, f, v, m, yes, no in zip(*fields, strict=True):
        if m != "LEAF" and m not in _BRANCHES:
            raise unsupported(node, f"branch mode {m!r}")
        if m != "LEAF" and not 0 <= f < n_features:
            raise ModelError(f"{node.op_type} node {node.name!r}: feature {f} of an input of "
                             f"{n_features} features")
        table[(t, n)] = (m, f, v, yes, no)
    children = {(t, c) for (t, _), (m, _, _, yes, no) in table.items() if m != "LEAF"
                for c in (yes, no)}
    leaves = []
    for t in sorted({t for t, _ in table}):
        roots = [key for key in table if key[0] == t and key not in children]
        if len(roots) != 1:
            raise ModelError(f"{node.op_type} node {node.name!r}: tree {t} has {len(roots)} "
                             "roots")
        stack = [(roots[0], {})]
        while stack:
            key, box = stack.pop()
            if key not in table:
                raise ModelError(f"{node.op_type} node {node.name!r}: tree {t} refers to "
                                 f"node {key[1]}, which it does not define")
            if len(stack) > len(table):  # each cycle through a branch grows the stack
                raise ModelError(f"{node.op_type} node {node.name!r}: tree {t} has a cycle")
            m, f, v, yes, no = table[key]
            if m == "LEAF":
                leaves.append((t, key[1], box))
                continue
            for child, (side, strict) in zip((yes, no), _BRANCHES[m], strict=True):
                ends = {**box, f: dict(box.get(f, {}))}
                ends[f][side] = _tighter(ends[f].get(side), (v, strict), side)
                stack.append(((t, child), ends))
    return leaves


def _leaf_values(ctx: ConvertContext, node, prefix: str, leaves, n_out: int) -> np.ndarray:
    """[L, n_out]: the weights ``prefix``_weights summed per leaf and output id."""
    trees, nodes = ctx.attr(node, f"{prefix}_treeids"), ctx.attr(node, f"{prefix}_nodeids")
    ids, weights = ctx.attr(node, f"{prefix}_ids"), _attr_floats(ctx, node, f"{prefix}_weights")
    fields = (trees, nodes, ids, weights)
    if any(f is None for f in fields) or len({len(f) for f in fields}) != 1:
        raise ModelError(f"{node.op_type} node {node.name!r}: the {prefix}_* attributes are "
                         "missing or of different lengths")
    row = {(t, n): k for k, (t, n, _) in enumerate(leaves)}
    out = np.zeros((len(leaves), n_out), dtype=np.float64)
    for t, n, i, w in zip(*fields, strict=True):
        if (t, n) not in row or not 0 <= i < n_out:
            raise ModelError(f"{node.op_type} node {node.name!r}: a weight for tree {t} node "
                             f"{n}, output {i}, which is not a leaf of {n_out} outputs")
        out[row[(t, n)], i] += w
    return out.astype(np.float32)


def _ensemble(ctx: ConvertContext, node, x: Dyn, prefix: str, n_out: int, aggregate: str
              ) -> tuple[Dyn, np.ndarray]:
    """Raw scores [..., n_out]: the trees' leaf values summed (averaged), plus the base
    values; and the leaf values (for the binary rule)."""
    n_features = _features(node, x)
    leaves = _leaf_boxes(ctx, node, n_features)
    values = _leaf_values(ctx, node, prefix, leaves, n_out)
    lower = np.zeros((len(leaves), n_features, 2))
    upper = np.zeros((len(leaves), n_features, 2))
    lower[..., 0], upper[..., 0] = -np.inf, np.inf
    for k, (_, _, box) in enumerate(leaves):
        for f, ends in box.items():
            for side, array in (("lower", lower), ("upper", upper)):
                if side in ends:
                    array[k, f] = (ends[side][0], float(ends[side][1]))
    trees = sorted({t for t, _, _ in leaves})
    tree_index = np.array([trees.index(t) for t, _, _ in leaves], dtype=np.int64)
    lead = x.shape[:-1]
    per_tree = ctx.emit("TreeLeaves", [x, lower, upper, values, tree_index],
                        (*lead, len(trees), n_out))
    scores = ctx.emit("ReduceSum", [per_tree], (*lead, n_out),
                      {"axes": (len(lead),), "keepdims": 0})
    if aggregate == "AVERAGE":
        scores = emit_broadcast(ctx, "Mul", [scores, np.float32(1.0 / len(trees))])
    elif aggregate != "SUM":
        raise unsupported(node, f"aggregate_function {aggregate!r}")
    base = _attr_floats(ctx, node, "base_values")
    if base:
        if len(base) != n_out:
            raise ModelError(f"{node.op_type} node {node.name!r}: {len(base)} base values for "
                             f"{n_out} outputs")
        scores = emit_broadcast(ctx, "Add", [scores, np.asarray(base, np.float32)])
    return scores, values


@converter(ml_op("TreeEnsembleRegressor"), 1)
def tree_ensemble_regressor(ctx: ConvertContext, node) -> None:
    """The targets: leaf weights summed (or averaged) over trees, plus base values, then the
    post-transform."""
    x = ctx.value(node.input[0])
    n_out = int(ctx.attr(node, "n_targets", 1))
    aggregate = ctx.attr(node, "aggregate_function", "SUM")
    scores, _ = _ensemble(ctx, node, x, "target", n_out, aggregate)
    ctx.bind(node.output[0], _post_transform(ctx, node, scores))


@converter(ml_op("TreeEnsembleClassifier"), 1)
def tree_ensemble_classifier(ctx: ConvertContext, node) -> None:
    """Class scores: leaf weights summed over trees, plus base values; the post-transform and
    the label of the largest raw score (LinearClassifier's rules), or onnxruntime's binary
    form when one score column stands for two labels."""
    x = ctx.value(node.input[0])
    labels = _labels(ctx, node)
    if labels is None:
        raise unsupported(node, "no integer class labels")
    ids = set(ctx.attr(node, "class_ids") or [])
    binary = labels.size == 2 and len(ids) == 1
    n_out = 1 if binary else labels.size
    raw, values = _ensemble(ctx, node, x, "class", n_out, "SUM")
    if binary:
        if ids != {0}:
            raise unsupported(node, f"a binary score on class id {ids.pop()}")
        kind = ctx.attr(node, "post_transform", "NONE")
        if kind not in ("NONE", "LOGISTIC"):
            raise unsupported(node, f"post_transform {kind!r} on a binary score")
        # onnxruntime (measured): leaf weights all >= 0 are probabilities under NONE
        probabilities = kind == "NONE" and bool((values >= 0).all())
        scores, label = _binary(ctx, node, raw, labels,
                                complement=probabilities or kind == "LOGISTIC",
                                threshold=0.5 if probabilities else 0.0)
    else:
        scores, label = _post_transform(ctx, node, raw), _label_of(ctx, raw, labels)
    if len(node.output) > 1 and node.output[1]:
        ctx.bind(node.output[1], scores)
    if node.output[0]:
        ctx.bind(node.output[0], label)


converter(ml_op("TreeEnsembleRegressor"), 3)(tree_ensemble_regressor)
converter(ml_op("TreeEnsembleClassifier"), 3)(tree_ensemble_classifier)
