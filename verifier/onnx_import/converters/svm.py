"""Kernel support vector machines of ``ai.onnx.ml`` (SVMClassifier, SVMRegressor): scikit-learn's
SVC, NuSVC, SVR, NuSVR and OneClassSVM as skl2onnx exports them.

The kernel values K(x, v), one per support vector v, are built from standard IR pieces in the
order onnxruntime computes them (so each piece's float32 allowance covers one of its
roundings): RBF exp(-gamma * sum_f (x_f - v_f)^2) as Sub, Pow 2, ReduceSum, Mul, Exp; POLY
(gamma * x.v + coef0)^degree and SIGMOID tanh(gamma * x.v + coef0) as Linear, Mul, Add, then
Pow or Tanh; LINEAR x.v. The decision values are a Linear map of the kernel values.

SVMClassifier, one-vs-one (libsvm): for each class pair (i, j), i < j, in order, the decision
value s = sum over i's vectors of coefficients[j - 1] K + sum over j's vectors of
coefficients[i] K + rho; class i gets the vote where s > 0, j otherwise; the label is the
class with the most votes (the first on ties). The scores output holds the pairs' s, or
(-s, s) for two classes (onnxruntime, read from its kernel and measured).
SVMRegressor: sum_v coefficients K + rho[0], or its sign (+1 where > 0, else -1) for a
one-class model.

Refused by name: probability estimates (prob_a / prob_b: onnxruntime couples the pairwise
probabilities by an iterative solve), a classifier without support vectors (liblinear mode),
post-transforms other than NONE, string labels and unknown kernel types."""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.converters.linear import emit_linear
from verifier.onnx_import.converters.ml import (
    _features,
    _floats,
    _label_of,
    _labels,
    _no_post_transform,
)
from verifier.onnx_import.registry import converter, ml_op

KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _fail(node, what: str) -> ModelError:
    return ModelError(f"{node.op_type} node {node.name!r}: {what}")


def _rows(ctx: ConvertContext, node) -> Dyn:
    """The input as [N, features] (onnxruntime reads a rank-1 input as one row)."""
    x = ctx.value(node.input[0])
    n = _features(node, x)
    return ctx.emit("Reshape", [x], (1, n)) if x.rank == 1 else x


def _kernel_params(ctx: ConvertContext, node) -> tuple[str, float, float, float]:
    """(kernel type, gamma, coef0, degree); onnxruntime's defaults are zeros."""
    kind = ctx.attr(node, "kernel_type", "LINEAR")
    if kind not in KERNELS:
        raise unsupported(node, f"kernel_type {kind!r}")
    params = _floats(ctx, node, "kernel_params")
    if params is None or params.size == 0:
        return kind, 0.0, 0.0, 0.0
    if params.size != 3:
        raise _fail(node, f"kernel_params has {params.size} values (gamma, coef0, degree)")
    gamma, coef0, degree = (float(v) for v in params)
    return kind, gamma, coef0, degree


def _support_vectors(ctx: ConvertContext, node, count: int, features: int) -> np.ndarray:
    vectors = _floats(ctx, node, "support_vectors")
    size = 0 if vectors is None else vectors.size
    if size != count * features:
        raise _fail(node, f"{size} support vector values for {count} vectors of {features} "
                          "features")
    return vectors.reshape(count, features)


def kernel_values(ctx: ConvertContext, node, x: Dyn, vectors: np.ndarray) -> Dyn:
    """K(x, v) for every support vector v: [N, vectors]."""
    kind, gamma, coef0, degree = _kernel_params(ctx, node)
    if kind == "RBF":
        rows, features = x.shape
        apart = emit_broadcast(ctx, "Sub", [ctx.emit("Reshape", [x], (rows, 1, features)),
                                            vectors])
        square = ctx.emit("Pow", [apart], apart.shape, {"exponent": 2.0})
        distance = ctx.emit("ReduceSum", [square], apart.shape[:2], {"axes": (2,),
                                                                      "keepdims": 0})
        return ctx.emit("Exp", [emit_broadcast(ctx, "Mul", [distance, np.float32(-gamma)])],
                        distance.shape)
    dots = emit_linear(ctx, x, vectors, None)
    if kind == "LINEAR":
        return dots
    # onnxruntime's Gemm: gamma times the product, plus coef0 where it is not 0
    affine = emit_broadcast(ctx, "Mul", [dots, np.float32(gamma)])
    if coef0 != 0.0:
        affine = emit_broadcast(ctx, "Add", [affine, np.float32(coef0)])
    if kind == "SIGMOID":
        return ctx.emit("Tanh", [affine], affine.shape)
    return ctx.emit("Pow", [affine], affine.shape, {"exponent": degree})


def pair_weights(coefficients: np.ndarray, per_class: list[int]) -> np.ndarray:
    """[pairs, vectors]: row (i, j) holds coefficients[j - 1] on class i's vectors and
    coefficients[i] on class j's, zeros elsewhere; pairs in onnxruntime's order."""
    starts = np.concatenate([[0], np.cumsum(per_class)]).astype(int)
    rows = []
    for i in range(len(per_class)):
        for j in range(i + 1, len(per_class)):
            row = np.zeros(coefficients.shape[1], dtype=coefficients.dtype)
            row[starts[i]:starts[i + 1]] = coefficients[j - 1, starts[i]:starts[i + 1]]
            row[starts[j]:starts[j + 1]] = coefficients[i, starts[j]:starts[j + 1]]
            rows.append(row)
    return np.stack(rows)


def vote_matrix(classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight [classes, pairs], bias [classes]) with votes = weight @ won + bias, where
    won[p] is 1 when pair p = (i, j) votes for i (its value > 0) and 0 when it votes for j."""
    pairs = [(i, j) for i in range(classes) for j in range(i + 1, classes)]
    weight = np.zeros((classes, len(pairs)), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    for p, (i, j) in enumerate(pairs):
        weight[i, p], weight[j, p] = 1.0, -1.0
        bias[j] += 1.0
    return weight, bias


@converter(ml_op("SVMClassifier"), 1)
def svm_classifier(ctx: ConvertContext, node) -> None:
    """One-vs-one decision values, the label by votes, the scores as onnxruntime writes them."""
    x = _rows(ctx, node)
    labels = _labels(ctx, node)
    if labels is None:
        raise unsupported(node, "no integer class labels")
    if ctx.attr(node, "prob_a"):
        raise unsupported(node, "probability estimates (prob_a, prob_b)")
    _no_post_transform(ctx, node)
    per_class = [int(c) for c in (ctx.attr(node, "vectors_per_class") or [])]
    if not per_class:
        raise unsupported(node, "a classifier without support vectors (liblinear mode)")
    classes, count = labels.size, sum(per_class)
    if len(per_class) != classes or classes < 2 or min(per_class) < 0:
        raise _fail(node, f"vectors_per_class {per_class} for {classes} class labels")
    vectors = _support_vectors(ctx, node, count, x.shape[-1])
    coefficients = _floats(ctx, node, "coefficients")
    rho = _floats(ctx, node, "rho")
    pairs = classes * (classes - 1) // 2
    if coefficients is None or coefficients.size != (classes - 1) * count:
        raise _fail(node, f"{0 if coefficients is None else coefficients.size} coefficients "
                          f"for {classes - 1} rows of {count} support vectors")
    if rho is None or rho.size != pairs:
        raise _fail(node, f"{0 if rho is None else rho.size} rho values for {pairs} class "
                          "pairs")
    kernel = kernel_values(ctx, node, x, vectors)
    weights = pair_weights(coefficients.reshape(classes - 1, count), per_class)
    decisions = emit_linear(ctx, kernel, weights, rho)  # [N, pairs]
    won = emit_broadcast(ctx, "Greater", [decisions, np.zeros((1, 1), np.float32)])
    votes = emit_linear(ctx, won, *vote_matrix(classes))
    if node.output[0]:
        ctx.bind(node.output[0], _label_of(ctx, votes, labels))
    if len(node.output) > 1 and node.output[1]:
        scores = decisions if pairs > 1 else emit_linear(
            ctx, decisions, np.array([[-1.0], [1.0]], np.float32), None)
        ctx.bind(node.output[1], scores)


@converter(ml_op("SVMRegressor"), 1)
def svm_regressor(ctx: ConvertContext, node) -> None:
    """sum_v coefficients K(x, v) + rho[0] ([N, 1]); x . coefficients + rho[0] without
    support vectors; the sign of it (+1 / -1) for a one-class model."""
    x = _rows(ctx, node)
    _no_post_transform(ctx, node)
    count = int(ctx.attr(node, "n_supports", 0))
    coefficients = _floats(ctx, node, "coefficients")
    rho = _floats(ctx, node, "rho")
    width = count if count > 0 else x.shape[-1]
    if coefficients is None or coefficients.size != width:
        raise _fail(node, f"{0 if coefficients is None else coefficients.size} coefficients "
                          f"for {width} {'support vectors' if count > 0 else 'features'}")
    if rho is None or rho.size != 1:
        raise _fail(node, f"{0 if rho is None else rho.size} rho values (one expected)")
    inputs = kernel_values(ctx, node, x, _support_vectors(ctx, node, count, x.shape[-1])
                           ) if count > 0 else x
    y = emit_linear(ctx, inputs, coefficients.reshape(1, width), rho)
    if int(ctx.attr(node, "one_class", 0)):
        positive = emit_broadcast(ctx, "Greater", [y, np.zeros((1, 1), np.float32)])
        y = emit_linear(ctx, positive, np.array([[2.0]], np.float32),
                        np.array([-1.0], np.float32))
    ctx.bind(node.output[0], y)
