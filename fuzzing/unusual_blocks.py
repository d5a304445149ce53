"""Blocks of the unusual-model generator: each appends a few nodes to a ``Builder`` (see
unusual_nets.py) and leaves its result as ``b.cur`` / ``b.shape``.

``IMAGE_BLOCKS`` read [1, C, H, W] tensors, ``VECTOR_BLOCKS`` read [1, n]; each table maps a
block name to ``(build, fits)`` where ``fits(shape)`` says whether the block applies. Sizes are
kept small (a few dozen values) so that sampling the box says something about the property.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

F32 = np.float32
I64 = np.int64


def _weights(b, shape, scale: float = 1.0) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) or 1
    return (b.rng.normal(size=shape) * scale / np.sqrt(fan_in)).astype(F32)


# -- image blocks: [1, C, H, W] -------------------------------------------------------------------
def conv_transpose(b) -> None:
    """ConvTranspose, stride 2 when the output stays small (the generator-network layer)."""
    _, c, h, w = b.shape
    k = int(b.rng.integers(2, 4))
    s = 2 if (h - 1) * 2 + k <= 2 * b.width and b.rng.random() < 0.6 else 1
    oc = int(b.rng.integers(1, 3))
    wt = _weights(b, (c, oc, k, k), 2.0)
    bias = (b.rng.normal(size=oc) * 0.2).astype(F32)
    out = b.node("ConvTranspose", [b.cur, b.const(wt), b.const(bias)], kernel_shape=[k, k],
                 strides=[s, s])
    b.set(out, (1, oc, (h - 1) * s + k, (w - 1) * s + k))


def resize(b) -> None:
    """Nearest-neighbour upsampling by 2 (the Upsample of older exporters)."""
    _, c, h, w = b.shape
    attrs = {"mode": "nearest"}
    if b.rng.random() < 0.5:
        attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    scales = b.const([1.0, 1.0, 2.0, 2.0])
    b.set(b.node("Resize", [b.cur, "", scales], **attrs), (1, c, 2 * h, 2 * w))


def batch_norm(b) -> None:
    """BatchNormalization (inference form), then LeakyRelu half of the time."""
    c = b.shape[1]
    params = [b.rng.uniform(0.5, 1.5, c), b.rng.normal(size=c) * 0.3,
              b.rng.normal(size=c) * 0.3, b.rng.uniform(0.3, 2.0, c)]
    out = b.node("BatchNormalization", [b.cur, *[b.const(p) for p in params]],
                 epsilon=float(b.rng.choice([1e-5, 1e-3])))
    b.set(out, b.shape)
    if b.rng.random() < 0.5:
        b.set(b.node("LeakyRelu", [b.cur], alpha=float(b.rng.choice([0.01, 0.1, 0.2]))), b.shape)


def scatter_patch(b) -> None:
    """ScatterND pasting a constant patch over some pixels (the patch front end of detectors)."""
    _, c, h, w = b.shape
    flat = b.rng.choice(c * h * w, size=min(3, c * h * w), replace=False)
    idx = np.array([[0, *np.unravel_index(int(f), (c, h, w))] for f in flat], dtype=I64)
    upd = b.rng.uniform(-1, 1, len(idx)).astype(F32)
    b.set(b.node("ScatterND", [b.cur, b.const(idx, I64), b.const(upd)]), b.shape)


def scatter_channel(b) -> None:
    """ScatterND writing an input-dependent channel (Sin of another channel) over channel c."""
    _, c, h, w = b.shape
    src, dst = (int(v) for v in b.rng.choice(c, size=2, replace=False))
    sl = b.node("Slice", [b.cur, b.const([src], I64), b.const([src + 1], I64),
                          b.const([1], I64)], featured=False)
    upd = b.node("Reshape", [b.node("Sin", [sl]), b.const([1, 1, h, w], I64)], featured=False)
    idx = b.const(np.array([[[0, dst]]], dtype=I64), I64)
    b.set(b.node("ScatterND", [b.cur, idx, upd]), b.shape)


def softmax_image(b) -> None:
    axis = int(b.rng.choice([1, 3]))
    b.set(b.node("Softmax", [b.cur], axis=axis), b.shape)


def split_concat(b) -> None:
    """Split on channels (or width), a different map on each part, Concat back."""
    _, c, h, w = b.shape
    axis = 1 if c >= 2 else 3
    size = b.shape[axis]
    first = int(b.rng.integers(1, size))
    outs = [b.fresh("split"), b.fresh("split")]
    b.nodes.append(helper.make_node("Split", [b.cur, b.const([first, size - first], I64)], outs,
                                    axis=axis))
    b.ops.extend(op for op in ("Split",) if op not in b.ops)
    parts = [b.node("Cos", [outs[0]]), b.node("LeakyRelu", [outs[1]], alpha=0.1)]
    b.set(b.node("Concat", parts[::-1], axis=axis), b.shape)


def slice_image(b) -> None:
    """Slice with a step of 2 over rows, or cropping one column."""
    _, c, h, w = b.shape
    if b.rng.random() < 0.5:
        out = b.node("Slice", [b.cur, b.const([0], I64), b.const([h], I64), b.const([2], I64),
                               b.const([2], I64)])
        b.set(out, (1, c, (h + 1) // 2, w))
    else:
        out = b.node("Slice", [b.cur, b.const([1], I64), b.const([w], I64), b.const([3], I64)])
        b.set(out, (1, c, h, w - 1))


def reduce_image(b) -> None:
    """ReduceMean over rows (attribute axes, opset 13) or ReduceSum over channels (input axes)."""
    _, c, h, w = b.shape
    if b.rng.random() < 0.5:
        b.set(b.node("ReduceMean", [b.cur], axes=[2], keepdims=1), (1, c, 1, w))
    else:
        b.set(b.node("ReduceSum", [b.cur, b.const([1], I64)], keepdims=1), (1, 1, h, w))


def _big(shape) -> bool:
    return int(np.prod(shape[1:])) >= 2


IMAGE_BLOCKS = {
    "convtranspose": (conv_transpose, lambda s: s[2] <= 20),
    "resize": (resize, lambda s: s[2] <= 10),
    "batchnorm": (batch_norm, lambda s: True),
    "scatter_patch": (scatter_patch, lambda s: True),
    "scatter_channel": (scatter_channel, lambda s: s[1] >= 2),
    "softmax_img": (softmax_image, lambda s: True),
    "split_concat": (split_concat, lambda s: s[1] >= 2 or s[3] >= 2),
    "slice_img": (slice_image, lambda s: s[2] >= 2 and s[3] >= 2),
    "reduce_img": (reduce_image, lambda s: s[1] >= 2 and s[3] >= 2),
}


# -- vector blocks: [1, n] ------------------------------------------------------------------------
def _unary(op: str, **attrs):
    def build(b) -> None:
        b.set(b.node(op, [b.cur], **attrs), b.shape)
    return build


def leaky(b) -> None:
    b.set(b.node("LeakyRelu", [b.cur], alpha=float(b.rng.choice([0.01, 0.1, 0.2]))), b.shape)


def sign(b) -> None:
    """z + 0.5 sign(z): a jump at 0."""
    s = b.node("Sign", [b.cur])
    b.set(b.node("Add", [b.cur, b.node("Mul", [s, b.const(0.5)], False)], False), b.shape)


def floor(b) -> None:
    scaled = b.node("Mul", [b.cur, b.const(2.0)], False)
    b.set(b.node("Floor", [scaled]), b.shape)


def pow_const(b) -> None:
    b.set(b.node("Pow", [b.cur, b.const(float(b.rng.choice([2.0, 3.0])))]), b.shape)


def pow_dynamic(b) -> None:
    """(sigmoid(z) + 0.5) ** (z / 2): base in (0.5, 1.5), exponent input-dependent."""
    base = b.node("Add", [b.node("Sigmoid", [b.cur], False), b.const(0.5)], False)
    expo = b.node("Mul", [b.cur, b.const(0.5)], False)
    b.set(b.node("Pow", [base, expo]), b.shape)


def where_equal(b) -> None:
    """Where(Floor(z) == 0, z, -z): a data-dependent choice through an equality test."""
    cond = b.node("Equal", [b.node("Floor", [b.cur]), b.const(0.0)])
    b.set(b.node("Where", [cond, b.cur, b.node("Neg", [b.cur], False)]), b.shape)


def where_compare(b) -> None:
    """Where(z > t, z, 0.3 z) with any of the four order comparisons."""
    op = str(b.rng.choice(["Greater", "Less", "GreaterOrEqual", "LessOrEqual"]))
    cond = b.node(op, [b.cur, b.const(float(b.rng.uniform(-0.5, 0.5)))])
    b.set(b.node("Where", [cond, b.cur, b.node("Mul", [b.cur, b.const(0.3)], False)]), b.shape)


def argmax_onehot(b) -> None:
    """z + OneHot(ArgMax(z)): the counting front of segmentation metrics."""
    n = b.shape[1]
    arg = b.node("ArgMax", [b.cur], axis=1, keepdims=0)
    hot = b.node("OneHot", [arg, b.const(n, I64), b.const([0.0, 1.0])], axis=-1)
    b.set(b.node("Add", [b.cur, hot], False), b.shape)


def argmax_cast(b) -> None:
    """[z, float(ArgMax(z))]."""
    arg = b.node("ArgMax", [b.cur], axis=1, keepdims=1)
    cast = b.node("Cast", [arg], to=TensorProto.FLOAT)
    b.set(b.node("Concat", [b.cur, cast], axis=1), (1, b.shape[1] + 1))


def cast_float(b) -> None:
    wide = b.node("Cast", [b.cur], to=TensorProto.DOUBLE)
    b.set(b.node("Cast", [wide], to=TensorProto.FLOAT), b.shape)


def cast_int(b) -> None:
    """float(int(3 z)): truncation toward zero (int32 / int64), or z != 0 (bool)."""
    scaled = b.node("Mul", [b.cur, b.const(3.0)], False)
    to = int(b.rng.choice([TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL]))
    ints = b.node("Cast", [scaled], to=to)
    b.set(b.node("Cast", [ints], to=TensorProto.FLOAT), b.shape)


def softmax_rank1(b) -> None:
    n = b.shape[1]
    flat = b.node("Reshape", [b.cur, b.const([n], I64)], False)
    soft = b.node("Softmax", [flat], axis=0)
    b.set(b.node("Reshape", [soft, b.const([1, n], I64)], False), b.shape)


def reduce_vec(b) -> None:
    """z - mean(z) (layer-norm centring) or [z, sum(z)]."""
    if b.rng.random() < 0.5:
        mean = b.node("ReduceMean", [b.cur], axes=[1], keepdims=1)
        b.set(b.node("Sub", [b.cur, mean], False), b.shape)
    else:
        total = b.node("ReduceSum", [b.cur, b.const([1], I64)], keepdims=1)
        b.set(b.node("Concat", [b.cur, total], axis=1), (1, b.shape[1] + 1))


def gather(b) -> None:
    idx = b.rng.integers(0, b.shape[1], size=int(b.rng.integers(2, b.shape[1] + 2)))
    b.set(b.node("Gather", [b.cur, b.const(idx, I64)], axis=1), (1, len(idx)))


def slice_concat(b) -> None:
    n = b.shape[1]
    lo = int(b.rng.integers(0, n - 1))
    part = b.node("Slice", [b.cur, b.const([lo], I64), b.const([n], I64), b.const([1], I64)])
    b.set(b.node("Concat", [part, b.cur], axis=1), (1, 2 * n - lo))


def split_vec(b) -> None:
    n = b.shape[1]
    first = int(b.rng.integers(1, n))
    outs = [b.fresh("split"), b.fresh("split")]
    b.nodes.append(helper.make_node("Split", [b.cur, b.const([first, n - first], I64)], outs,
                                    axis=1))
    b.ops.extend(op for op in ("Split",) if op not in b.ops)
    b.set(b.node("Concat", [b.node("Sin", [outs[1]]), outs[0]], axis=1), b.shape)


def scatter_vec(b) -> None:
    """ScatterND: some entries replaced by others (input-dependent updates) or by constants."""
    n = b.shape[1]
    m = min(2, n - 1)
    dst = b.rng.choice(n, size=m, replace=False)
    idx = b.const(np.array([[[0, int(d)] for d in dst]], dtype=I64), I64)
    if b.rng.random() < 0.5:
        upd = b.node("Gather", [b.cur, b.const(b.rng.integers(0, n, m), I64)], False, axis=1)
    else:
        upd = b.const(b.rng.uniform(-1, 1, (1, m)))
    b.set(b.node("ScatterND", [b.cur, idx, upd]), b.shape)


def range_gather(b) -> None:
    """Gather(z, Range(0, n, 2)); half the time n comes from Shape(z) (folds to a constant)."""
    n = b.shape[1]
    if b.rng.random() < 0.5:
        limit = b.node("Gather", [b.node("Shape", [b.cur]), b.const(1, I64)], False, axis=0)
    else:
        limit = b.const(n, I64)
    rng_idx = b.node("Range", [b.const(0, I64), limit, b.const(2, I64)])
    b.set(b.node("Gather", [b.cur, rng_idx], axis=1), (1, (n + 1) // 2))


def batch_norm_vec(b) -> None:
    batch_norm(b)


VECTOR_BLOCKS = {
    "leakyrelu": (leaky, lambda s: True),
    "sin": (_unary("Sin"), lambda s: True),
    "cos": (_unary("Cos"), lambda s: True),
    "sign": (sign, lambda s: True),
    "floor": (floor, lambda s: True),
    "pow_const": (pow_const, lambda s: True),
    "pow_dynamic": (pow_dynamic, lambda s: True),
    "where_equal": (where_equal, lambda s: True),
    "where_compare": (where_compare, lambda s: True),
    "argmax_onehot": (argmax_onehot, lambda s: s[1] >= 2),
    "argmax_cast": (argmax_cast, lambda s: s[1] >= 2),
    "cast_float": (cast_float, lambda s: True),
    "cast_int": (cast_int, lambda s: True),
    "softmax": (_unary("Softmax", axis=1), lambda s: True),
    "softmax_rank1": (softmax_rank1, lambda s: True),
    "reduce": (reduce_vec, lambda s: s[1] >= 2),
    "gather": (gather, lambda s: s[1] >= 2),
    "slice_concat": (slice_concat, lambda s: s[1] >= 2),
    "split": (split_vec, lambda s: s[1] >= 2),
    "scatternd": (scatter_vec, lambda s: s[1] >= 2),
    "range": (range_gather, lambda s: s[1] >= 2),
    "batchnorm_vec": (batch_norm_vec, lambda s: True),
}


# The blocks of later importer work (unusual_blocks_more.py), in the same tables.
from fuzzing.unusual_blocks_more import IMAGE_MORE, VECTOR_MORE  # noqa: E402

IMAGE_BLOCKS.update(IMAGE_MORE)
VECTOR_BLOCKS.update(VECTOR_MORE)

# Control flow, sequences and other exporters' forms (unusual_blocks_flow.py).
from fuzzing.unusual_blocks_flow import VECTOR_FLOW  # noqa: E402

VECTOR_BLOCKS.update(VECTOR_FLOW)
