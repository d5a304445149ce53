"""The ``ai.onnx.ml`` operators that scikit-learn models exported by skl2onnx use around their
arithmetic: Scaler, LinearClassifier, LinearRegressor, Normalizer, ArrayFeatureExtractor,
Imputer, Binarizer.
Each becomes the standard IR pieces that compute it (affine maps, Softmax, Sigmoid, ArgMax,
a division), in the order onnxruntime's kernels compute, so each piece's float32 allowance
covers one of their roundings; the differential check compares the import with
onnxruntime as for every model.

Refused by name: string class labels (a label the bounds cannot carry), the PROBIT and
SOFTMAX_ZERO transforms, ZipMap (its output is a sequence of maps, not a tensor: skl2onnx
writes plain tensors with ``options={"zipmap": False}``). Tree ensembles are converted in
``converters/trees.py``, kernel SVMs in ``converters/svm.py``; the other ml operators are not
converted (unsupported operator)."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.converters.linear import emit_linear
from verifier.onnx_import.converters.shape import emit_gather
from verifier.onnx_import.registry import converter, ml_op


def _floats(ctx: ConvertContext, node, name: str, default=None) -> np.ndarray | None:
    value = ctx.attr(node, name, default)
    return None if value is None else np.asarray(value, dtype=np.float32)


def _features(node, x: Dyn) -> int:
    if x.rank not in (1, 2):
        raise unsupported(node, f"an input of rank {x.rank} (features last, rank 1 or 2)")
    return x.shape[-1]


@converter(ml_op("Scaler"), 1)
def scaler(ctx: ConvertContext, node) -> None:
    """(x - offset) * scale, per feature (or one value for all)."""
    x = ctx.value(node.input[0])
    n = _features(node, x)
    shifted = x
    for op, name in (("Sub", "offset"), ("Mul", "scale")):
        value = _floats(ctx, node, name)
        if value is None or value.size == 0:
            continue
        if value.size not in (1, n):
            raise ModelError(f"Scaler node {node.name!r}: {name} has {value.size} values for "
                             f"{n} features")
        shifted = emit_broadcast(ctx, op, [shifted, value])
    ctx.bind(node.output[0], shifted)


def _labels(ctx: ConvertContext, node) -> np.ndarray | None:
    """Integer class labels (LinearClassifier's ``classlabels_ints``, the tree ensembles'
    ``classlabels_int64s``); None when there are none."""
    if ctx.attr(node, "classlabels_strings") is not None:
        raise unsupported(node, "string class labels (the label output is a string)")
    ints = ctx.attr(node, "classlabels_ints", ctx.attr(node, "classlabels_int64s"))
    return None if ints is None else np.asarray(ints, dtype=np.int64)


def _no_post_transform(ctx: ConvertContext, node) -> None:
    """Refuse a post-transform where the op's converter takes none."""
    kind = ctx.attr(node, "post_transform", "NONE")
    if kind != "NONE":
        raise unsupported(node, f"post_transform {kind!r}")


def _post_transform(ctx: ConvertContext, node, scores: Dyn) -> Dyn:
    kind = ctx.attr(node, "post_transform", "NONE")
    if kind == "NONE":
        return scores
    if kind == "LOGISTIC":
        return ctx.emit("Sigmoid", [scores], scores.shape)
    if kind == "SOFTMAX":
        return ctx.emit("Softmax", [scores], scores.shape, {"axis": scores.rank - 1})
    raise unsupported(node, f"post_transform {kind!r}")


def _scores(ctx: ConvertContext, node, x: Dyn, rows: int | None) -> Dyn:
    """x W^T + b with W [rows, features] from ``coefficients`` (rows, when None: as many as
    the coefficients fill)."""
    n = _features(node, x)
    coef = _floats(ctx, node, "coefficients")
    bias = _floats(ctx, node, "intercepts")
    if coef is None or coef.size == 0 or coef.size % n:
        raise ModelError(f"{node.op_type} node {node.name!r}: {0 if coef is None else coef.size}"
                         f" coefficients for {n} features")
    rows = coef.size // n if rows is None else rows
    if coef.size != rows * n or (bias is not None and bias.size not in (0, rows)):
        raise ModelError(f"{node.op_type} node {node.name!r}: coefficients and intercepts do not "
                         f"give {rows} rows of {n} features")
    if x.rank == 1:
        x = ctx.emit("Reshape", [x], (1, n))
    bias = None if bias is None or bias.size == 0 else bias
    return emit_linear(ctx, x, coef.reshape(rows, n), bias)


@converter(ml_op("LinearClassifier"), 1)
def linear_classifier(ctx: ConvertContext, node) -> None:
    """Scores x W^T + b, one row per class, then the post-transform; the label is the class
    of the largest raw score (onnxruntime's choice, measured: Sigmoids that round to the same
    1.0 do not change it). A single row for two classes is onnxruntime's binary form."""
    x = ctx.value(node.input[0])
    labels = _labels(ctx, node)
    raw = _scores(ctx, node, x, None)
    if raw.shape[-1] == 1 and labels is not None and labels.size == 2:
        scores, label = _binary(ctx, node, raw, labels)
    else:
        if labels is not None and labels.size != raw.shape[-1]:
            raise ModelError(f"LinearClassifier node {node.name!r}: {labels.size} class labels"
                             f" for {raw.shape[-1]} score rows")
        scores, label = _post_transform(ctx, node, raw), _label_of(ctx, raw, labels)
    if len(node.output) > 1 and node.output[1]:
        ctx.bind(node.output[1], scores)
    if node.output[0]:
        ctx.bind(node.output[0], label)


def _binary(ctx: ConvertContext, node, raw: Dyn, labels: np.ndarray, complement: bool = True,
            threshold: float = 0.0) -> tuple[Dyn, Dyn]:
    """onnxruntime's two-class scores from the one raw score s (measured for
    LinearClassifier): (1 - p, p) with p = sigmoid(s) under LOGISTIC and p = s otherwise
    (SOFTMAX too leaves s as it is), or (-p, p) without ``complement``; the label is the
    second class where s > ``threshold``."""
    kind = ctx.attr(node, "post_transform", "NONE")
    if kind not in ("NONE", "LOGISTIC", "SOFTMAX"):
        raise unsupported(node, f"post_transform {kind!r}")
    p = ctx.emit("Sigmoid", [raw], raw.shape) if kind == "LOGISTIC" else raw
    pair = emit_linear(ctx, p, np.array([[-1.0], [1.0]], np.float32),
                       np.array([1.0 if complement else 0.0, 0.0], np.float32))
    positive = emit_broadcast(ctx, "Greater", [raw, np.full((1, 1), threshold, np.float32)])
    low, high = (float(v) for v in labels)
    label = emit_linear(ctx, positive, np.array([[high - low]], np.float32),
                        np.array([low], np.float32))
    return pair, ctx.emit("Reshape", [label], raw.shape[:-1])


def _label_of(ctx: ConvertContext, scores: Dyn, labels: np.ndarray | None) -> Dyn:
    """The label of the largest score of each row ([N]; the first on ties): its index mapped
    through ``labels``."""
    axis = scores.rank - 1
    index = ctx.emit("ArgMax", [scores], scores.shape[:axis],
                     {"axis": axis, "keepdims": 0, "last": 0})
    if labels is None or np.array_equal(labels, np.arange(labels.size)):
        return index
    return _pick(ctx, labels.astype(np.float32), index)


def _pick(ctx: ConvertContext, table: np.ndarray, index: Dyn) -> Dyn:
    """table[index] for a constant 1-D table and an input-dependent index in [0, size). A
    non-decreasing table (scikit-learn's classes are sorted) is a sum of steps
    table[0] + sum_k (table[k] - table[k-1]) [index >= k], whose bounds over an index interval
    [lo, hi] are [table[lo], table[hi]]; any other table is the one-hot row of the index times
    the table (each entry bounded alone: looser)."""
    if table.size > 1 and bool(np.all(np.diff(table) >= 0)):
        column = ctx.emit("Reshape", [index], index.shape + (1,))
        steps = emit_broadcast(ctx, "GreaterOrEqual",
                               [column, np.arange(1, table.size, dtype=np.float64)])
        picked = emit_linear(ctx, steps, np.diff(table).reshape(1, -1), table[:1])
    else:
        one_hot = ctx.emit("OneHot", [index], index.shape + (table.size,),
                           {"depth": int(table.size), "axis": index.rank, "off": 0.0,
                            "on": 1.0})
        picked = emit_linear(ctx, one_hot, table.reshape(1, -1), None)  # [..., 1]
    return ctx.emit("Reshape", [picked], index.shape)


@converter(ml_op("LinearRegressor"), 1)
def linear_regressor(ctx: ConvertContext, node) -> None:
    """x W^T + b with one row per target."""
    x = ctx.value(node.input[0])
    _no_post_transform(ctx, node)
    ctx.bind(node.output[0], _scores(ctx, node, x, int(ctx.attr(node, "targets", 1))))


@converter(ml_op("Normalizer"), 1)
def normalizer(ctx: ConvertContext, node) -> None:
    """Each row divided by its MAX, L1 or L2 norm."""
    x = ctx.value(node.input[0])
    _features(node, x)
    norm = ctx.attr(node, "norm", "MAX")
    attrs = {"axes": (x.rank - 1,), "keepdims": 1}
    kept = x.shape[:-1] + (1,)
    if norm == "MAX":
        scale = ctx.emit("ReduceMax", [x], kept, attrs)
    elif norm == "L1":
        scale = ctx.emit("ReduceSum", [ctx.emit("Abs", [x], x.shape)], kept, attrs)
    elif norm == "L2":
        square = ctx.emit("Pow", [x], x.shape, {"exponent": 2.0})
        scale = ctx.emit("Sqrt", [ctx.emit("ReduceSum", [square], kept, attrs)], kept)
    else:
        raise unsupported(node, f"norm {norm!r}")
    ctx.bind(node.output[0], emit_broadcast(ctx, "Div", [x, scale]))


@converter(ml_op("ArrayFeatureExtractor"), 1)
def array_feature_extractor(ctx: ConvertContext, node) -> None:
    """x[..., indices]: a Gather on the last axis for constant indices; a constant 1-D table
    read at an input-dependent index (a classifier's label) as ``_pick`` reads it."""
    x, idx = ctx.value(node.input[0]), ctx.value(node.input[1])
    if isinstance(idx, Dyn):
        table = np.asarray(ctx.const(node.input[0], "the table read at a dynamic index"))
        if table.ndim != 1:
            raise unsupported(node, "a dynamic index into a table of rank other than 1")
        ctx.bind(node.output[0], _pick(ctx, table.astype(np.float32), idx))
        return
    idx = np.asarray(idx, dtype=np.int64).ravel()
    if np.any(idx < 0) or np.any(idx >= x.shape[-1]):
        raise ModelError(f"ArrayFeatureExtractor node {node.name!r}: indices {idx.tolist()} "
                         f"outside the {x.shape[-1]} features")
    ctx.bind(node.output[0], emit_gather(ctx, x, idx, x.rank - 1))


@converter(ml_op("Imputer"), 1)
def imputer(ctx: ConvertContext, node) -> None:
    """x with the entries equal to ``replaced_value_float`` replaced by the imputed values (per
    feature or one for all). Replacing NaN (scikit-learn's SimpleImputer) is the identity on
    the values a spec's box holds; a number v is a selection where x == v."""
    x = ctx.value(node.input[0])
    n = _features(node, x)
    if ctx.attr(node, "imputed_value_int64s") is not None:
        raise unsupported(node, "integer imputed values (an integer input)")
    imputed = _floats(ctx, node, "imputed_value_floats")
    if imputed is None or imputed.size not in (1, n):
        raise ModelError(f"Imputer node {node.name!r}: {0 if imputed is None else imputed.size} "
                         f"imputed values for {n} features")
    replaced = float(ctx.attr(node, "replaced_value_float", 0.0))
    if np.isnan(replaced):
        ctx.bind(node.output[0], x)
        return
    hit = emit_broadcast(ctx, "Equal", [x, np.full((1,) * x.rank, replaced)])
    ctx.bind(node.output[0], emit_broadcast(ctx, "Select", [hit, imputed, x]))


@converter(ml_op("Binarizer"), 1)
def binarizer(ctx: ConvertContext, node) -> None:
    """1 where x > threshold, else 0."""
    x = ctx.value(node.input[0])
    threshold = float(ctx.attr(node, "threshold", 0.0))
    ctx.bind(node.output[0], emit_broadcast(ctx, "Greater", [x, np.full((1,) * x.rank,
                                                                        threshold)]))


# (constant only: never claimed by ``nncert supports``; a dynamic one is refused by name)
@converter(ml_op("ZipMap"), 1, constant_only=True)
def zip_map(ctx: ConvertContext, node) -> None:
    raise unsupported(node, "its output is a sequence of maps, not a tensor (skl2onnx writes "
                            "plain tensors with options={'zipmap': False})")
