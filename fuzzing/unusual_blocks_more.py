"""More blocks of the unusual-model generator: the ops imported as compositions (LRN too),
index maps, interpolation, quantisation, recurrent layers, TopK, MVN, LayerNorm
(verifier/onnx_import/converters/:
composite.py, rearrange.py, interpolation.py, quantize.py, einsum.py, recurrent.py,
sorting.py). Merged into ``unusual_blocks``' tables; opset 13.
"""

from __future__ import annotations

import numpy as np

from fuzzing.unusual_blocks import F32, I64, _weights


# -- image blocks: [1, C, H, W] -------------------------------------------------------------------
def instance_norm(b) -> None:
    c = b.shape[1]
    scale, bias = b.rng.uniform(0.5, 1.5, c), b.rng.normal(size=c) * 0.3
    out = b.node("InstanceNormalization", [b.cur, b.const(scale), b.const(bias)],
                 epsilon=float(b.rng.choice([1e-5, 1e-2])))
    b.set(out, b.shape)


def resize_interpolated(b) -> None:
    """Linear or cubic upsampling by 2 under one of the common coordinate modes."""
    _, c, h, w = b.shape
    mode = str(b.rng.choice(["linear", "cubic"]))
    coords = str(b.rng.choice(["half_pixel", "align_corners", "asymmetric",
                               "pytorch_half_pixel"]))
    out = b.node("Resize", [b.cur, "", b.const([1.0, 1.0, 2.0, 2.0])], mode=mode,
                 coordinate_transformation_mode=coords)
    b.set(out, (1, c, 2 * h, 2 * w))


def space_depth(b) -> None:
    """SpaceToDepth then DepthToSpace (DCR or CRD) by 2: the same pixels, moved twice."""
    _, c, h, w = b.shape
    packed = b.node("SpaceToDepth", [b.cur], blocksize=2)
    mode = str(b.rng.choice(["DCR", "CRD"]))
    b.set(b.node("DepthToSpace", [packed], blocksize=2, mode=mode), b.shape)


def prelu_image(b) -> None:
    slopes = b.rng.uniform(-0.5, 1.5, (b.shape[1], 1, 1))
    b.set(b.node("PRelu", [b.cur, b.const(slopes)]), b.shape)


def lp_pool(b) -> None:
    _, c, h, w = b.shape
    out = b.node("LpPool", [b.cur], kernel_shape=[2, 2], p=int(b.rng.choice([1, 2])))
    b.set(out, (1, c, h - 1, w - 1))


def qdq_image(b) -> None:
    """uint8 quantisation round trip (per tensor), the QDQ form of int8 models. The input is
    scaled first: two round trips in a row at scales 0.05 and 0.02 put grid points exactly on
    rounding ties (0.05 / 0.02 = 2.5), where float32 and float64 evaluation round apart (the
    bounds hold both sides; the point comparison of the import check does not)."""
    scale, zero = b.const(float(b.rng.choice([0.02, 0.05]))), b.const(128, np.uint8)
    moved = b.node("Mul", [b.cur, b.const(float(b.rng.uniform(1.05, 1.2)))], False)
    q = b.node("QuantizeLinear", [moved, scale, zero])
    b.set(b.node("DequantizeLinear", [q, scale, zero]), b.shape)


def lrn(b) -> None:
    """LRN over an odd window of channels (onnxruntime's running channel sum, a Slack)."""
    out = b.node("LRN", [b.cur], size=int(b.rng.choice([1, 3, 5])),
                 alpha=float(b.rng.choice([1e-4, 0.1, 1.0])),
                 beta=float(b.rng.choice([0.5, 0.75, 1.5])),
                 bias=float(b.rng.choice([1.0, 2.0])))
    b.set(out, b.shape)


def grid_sample(b) -> None:
    """GridSample (opset 16) at a constant grid (a random affine warp) or at a grid computed
    from the image (tanh of a dense layer, scaled past the edges); random mode (cubic at the
    constant grid only), padding and corner convention."""
    _, c, h, w = b.shape
    b.opset = max(b.opset, 16)
    learned = bool(b.rng.random() < 0.5)
    modes = ["bilinear", "nearest"] + ([] if learned else ["bicubic"])
    attrs = {"mode": str(b.rng.choice(modes)),
             "padding_mode": str(b.rng.choice(["zeros", "border", "reflection"])),
             "align_corners": int(b.rng.integers(0, 2))}
    ho, wo = int(b.rng.integers(2, h + 2)), int(b.rng.integers(2, w + 2))
    if learned:
        flat = b.node("Flatten", [b.cur], False, axis=1)
        weights = b.rng.normal(size=(ho * wo * 2, c * h * w)) / np.sqrt(c * h * w)
        dense = b.node("Gemm", [flat, b.const(weights), b.const(b.rng.normal(size=ho * wo * 2)
                                                                 * 0.3)], False, transB=1)
        scaled = b.node("Mul", [b.node("Tanh", [dense], False), b.const(1.2)], False)
        grid = b.node("Reshape", [scaled, b.const([1, ho, wo, 2], I64)], False)
    else:
        theta = np.eye(2, 3) + b.rng.normal(size=(2, 3)) * 0.3
        ys, xs = np.meshgrid(np.linspace(-1, 1, ho), np.linspace(-1, 1, wo), indexing="ij")
        base = np.stack([xs, ys, np.ones_like(xs)], -1)  # [Ho, Wo, 3]
        grid = b.const((base @ theta.T)[None])
    b.set(b.node("GridSample", [b.cur, grid], **attrs), (1, c, ho, wo))


IMAGE_MORE = {
    "grid_sample": (grid_sample, lambda s: True),
    "instancenorm": (instance_norm, lambda s: s[2] * s[3] >= 2),
    "resize_linear": (resize_interpolated, lambda s: s[2] <= 10),
    "space_depth": (space_depth, lambda s: s[2] % 2 == 0 and s[3] % 2 == 0),
    "prelu_img": (prelu_image, lambda s: True),
    "lppool": (lp_pool, lambda s: s[2] >= 2 and s[3] >= 2),
    "qdq_img": (qdq_image, lambda s: True),
    "lrn": (lrn, lambda s: True),
}


# -- vector blocks: [1, n] ------------------------------------------------------------------------
def activation(b) -> None:
    """One of the activations imported as compositions."""
    op = str(b.rng.choice(["HardSigmoid", "Softsign", "Selu", "Celu", "ThresholdedRelu",
                           "Shrink"]))
    attrs = {"Celu": {"alpha": 0.5}, "ThresholdedRelu": {"alpha": 0.2},
             "Shrink": {"lambd": 0.3, "bias": float(b.rng.choice([0.0, 0.3]))}}.get(op, {})
    b.set(b.node(op, [b.cur], **attrs), b.shape)


def round_ceil(b) -> None:
    """z + 0.5 round(2 z) or z + 0.5 ceil(2 z): steps at the ties or the integers."""
    op = str(b.rng.choice(["Round", "Ceil"]))
    step = b.node(op, [b.node("Mul", [b.cur, b.const(2.0)], False)])
    b.set(b.node("Add", [b.cur, b.node("Mul", [step, b.const(0.5)], False)], False), b.shape)


def log_softmax(b) -> None:
    b.set(b.node("LogSoftmax", [b.cur], axis=1), b.shape)


def reduce_more(b) -> None:
    """[z, r(z)] for one of ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSumExp."""
    op = str(b.rng.choice(["ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                           "ReduceLogSumExp"]))
    r = b.node(op, [b.cur], axes=[1], keepdims=1)
    b.set(b.node("Concat", [b.cur, r], False, axis=1), (1, b.shape[1] + 1))


def cumsum(b) -> None:
    attrs = {"exclusive": int(b.rng.integers(0, 2)), "reverse": int(b.rng.integers(0, 2))}
    b.set(b.node("CumSum", [b.cur, b.const(1, I64)], **attrs), b.shape)


def einsum(b) -> None:
    """z W (a constant contraction) or z * (z W) summed with z (two input-dependent sides)."""
    n = b.shape[1]
    w = b.const(_weights(b, (n, n)).astype(F32))
    zw = b.node("Einsum", [b.cur, w], equation="bi,ij->bj")
    if b.rng.random() < 0.5:
        b.set(zw, b.shape)
        return
    quad = b.node("Einsum", [b.cur, zw], equation="bi,bi->b")
    quad = b.node("Reshape", [quad, b.const([1, 1], I64)], False)
    b.set(b.node("Concat", [b.cur, quad], False, axis=1), (1, n + 1))


def gather_elements(b) -> None:
    n = b.shape[1]
    idx = b.rng.integers(-n, n, (1, n))
    b.set(b.node("GatherElements", [b.cur, b.const(idx, I64)], axis=1), b.shape)


def clip_dynamic(b) -> None:
    """Clip(z, -mean(z), 0.8): an input-dependent lower end."""
    mean = b.node("ReduceMean", [b.cur], False, axes=[0, 1], keepdims=0)
    low = b.node("Neg", [mean], False)
    b.set(b.node("Clip", [b.cur, low, b.const(0.8)]), b.shape)


def recurrent(b) -> None:
    """z read as a sequence of S steps by an RNN, GRU or LSTM (random direction, hidden size,
    biases, initial state, clip, peepholes, GRU's linear_before_reset, LSTM's input_forget);
    the block's output is Y or Y_h, flattened."""
    from onnx import helper

    n = b.shape[1]
    steps = next((s for s in (4, 3, 2) if n % s == 0 and n > s), n)
    feat, hid = n // steps, int(b.rng.integers(2, 6))
    op = str(b.rng.choice(["RNN", "GRU", "LSTM"]))
    gates, dirs = {"RNN": 1, "GRU": 3, "LSTM": 4}[op], int(b.rng.integers(1, 3))
    direction = "bidirectional" if dirs == 2 else str(b.rng.choice(["forward", "reverse"]))
    seq = b.node("Reshape", [b.cur, b.const([steps, 1, feat], I64)], False)
    ins = [seq, b.const(_weights(b, (dirs, gates * hid, feat)).astype(F32)),
           b.const(_weights(b, (dirs, gates * hid, hid)).astype(F32)),
           b.const(b.rng.normal(size=(dirs, 2 * gates * hid)).astype(F32) * 0.3)
           if b.rng.random() < 0.7 else "", "",
           b.const(b.rng.normal(size=(dirs, 1, hid)).astype(F32) * 0.3)
           if b.rng.random() < 0.3 else ""]
    attrs = {"hidden_size": hid, "direction": direction}
    if b.rng.random() < 0.3:
        attrs["clip"] = float(b.rng.uniform(0.5, 2.0))
    if op == "GRU":
        attrs["linear_before_reset"] = int(b.rng.integers(0, 2))
    if op == "LSTM":
        ins += ["", b.const(b.rng.normal(size=(dirs, 3 * hid)).astype(F32) * 0.3)
                if b.rng.random() < 0.5 else ""]
        attrs["input_forget"] = int(b.rng.random() < 0.2)
    while ins[-1] == "":
        ins.pop()
    y, y_h = b.fresh("y_"), b.fresh("yh_")
    b.nodes.append(helper.make_node(op, ins, [y, y_h], name=b.fresh(op.lower()), **attrs))
    if op not in b.ops:
        b.ops.append(op)
    whole = b.rng.random() < 0.5
    size = steps * dirs * hid if whole else dirs * hid
    out = b.node("Reshape", [y if whole else y_h, b.const([1, size], I64)], False)
    b.set(out, (1, size))


def top_k(b) -> None:
    """The k largest (or smallest) values of z, in order (torch.sort when k = n)."""
    n = b.shape[1]
    k = int(b.rng.integers(1, n + 1))
    from onnx import helper

    values, indices = b.fresh("topk_"), b.fresh("topk_i_")
    b.nodes.append(helper.make_node("TopK", [b.cur, b.const([k], I64)], [values, indices],
                                    name=values, largest=int(b.rng.random() < 0.7)))
    if "TopK" not in b.ops:
        b.ops.append("TopK")
    b.set(values, (1, k))


def mvn(b) -> None:
    """MeanVarianceNormalization over the vector (the normalisations' variance and its
    centred lower bound, converters/composite._normalize), then a per-feature scale."""
    n = b.shape[1]
    normed = b.node("MeanVarianceNormalization", [b.cur], axes=[1])
    scale = b.const(b.rng.uniform(0.5, 1.5, n).astype(F32))
    b.set(b.node("Mul", [normed, scale], False), b.shape)


def gated(b) -> None:
    """x gate(x) as exporters write it, which the importer fuses into one curve op: SiLU and
    QuickGelu products, GELU's erf and tanh decompositions, Mish and HardSwish as ops and as
    products, Swish (opset 24)."""
    form = str(b.rng.choice(["silu", "quick_gelu", "gelu_erf", "gelu_tanh", "mish", "mish_op",
                             "hard_swish_op", "hard_sigmoid", "relu6", "swish_op"]))
    x, n = b.cur, b.node
    if form == "silu":
        y = n("Mul", [x, n("Sigmoid", [x], False)], False)
    elif form == "quick_gelu":
        y = n("Mul", [n("Sigmoid", [n("Mul", [x, b.const(1.702)], False)], False), x], False)
    elif form == "gelu_erf":
        e = n("Erf", [n("Div", [x, b.const(2 ** 0.5)], False)], False)
        p = n("Mul", [x, n("Add", [e, b.const(1.0)], False)], False)
        y = n("Mul", [p, b.const(0.5)], False)
    elif form == "gelu_tanh":
        cube = n("Mul", [b.const(0.044715), n("Pow", [x, b.const(3.0)], False)], False)
        v = n("Mul", [b.const((2 / np.pi) ** 0.5), n("Add", [x, cube], False)], False)
        a = n("Add", [b.const(1.0), n("Tanh", [v], False)], False)
        y = n("Mul", [n("Mul", [x, b.const(0.5)], False), a], False)
    elif form == "mish":
        y = n("Mul", [x, n("Tanh", [n("Softplus", [x], False)], False)], False)
    elif form == "hard_sigmoid":
        y = n("Mul", [x, n("HardSigmoid", [x], False, alpha=1 / 6, beta=0.5)], False)
    elif form == "relu6":
        g = n("Clip", [n("Add", [x, b.const(3.0)], False), b.const(0.0), b.const(6.0)], False)
        y = n("Div", [n("Mul", [x, g], False), b.const(6.0)], False)
    else:
        op, since = {"mish_op": ("Mish", 18), "hard_swish_op": ("HardSwish", 14),
                     "swish_op": ("Swish", 24)}[form]
        b.opset = max(b.opset, since)
        y = n(op, [x], False, **({"alpha": float(b.rng.choice([1.0, 0.7]))}
                                 if op == "Swish" else {}))
    if f"gated:{form}" not in b.ops:
        b.ops.append(f"gated:{form}")
    b.set(y, b.shape)


def layer_norm(b) -> None:
    """A LayerNorm over the vector: the op (opset 17), or as exporters decompose it: mean,
    centring, the square as Pow or a product, the mean of squares, epsilon, Sqrt and a Div
    (the variance floor of verifier/ir/passes.floor_variances), then scale and bias."""
    n, x, node = b.shape[1], b.cur, b.node
    eps = float(b.rng.choice([1e-5, 1e-3]))
    scale = b.const(b.rng.uniform(0.5, 1.5, n).astype(F32))
    bias = b.const((b.rng.normal(size=n) * 0.3).astype(F32))
    form = str(b.rng.choice(["op", "pow", "mul"]))
    if form == "op":
        b.opset = max(b.opset, 17)
        y = node("LayerNormalization", [x, scale, bias], False, axis=-1, epsilon=eps)
    else:
        d = node("Sub", [x, node("ReduceMean", [x], False, axes=[1], keepdims=1)], False)
        sq = (node("Pow", [d, b.const(2.0)], False) if form == "pow"
              else node("Mul", [d, d], False))
        var = node("ReduceMean", [sq], False, axes=[1], keepdims=1)
        std = node("Sqrt", [node("Add", [var, b.const(eps)], False)], False)
        y = node("Add", [node("Mul", [node("Div", [d, std], False), scale], False), bias],
                 False)
    if f"layer_norm:{form}" not in b.ops:
        b.ops.append(f"layer_norm:{form}")
    b.set(y, b.shape)


VECTOR_MORE = {
    "mvn": (mvn, lambda s: s[1] >= 3),
    "recurrent": (recurrent, lambda s: s[1] >= 2),
    "topk": (top_k, lambda s: True),
    "activation_more": (activation, lambda s: True),
    "round_ceil": (round_ceil, lambda s: True),
    "logsoftmax": (log_softmax, lambda s: True),
    "reduce_more": (reduce_more, lambda s: s[1] >= 2),
    "cumsum": (cumsum, lambda s: True),
    "einsum": (einsum, lambda s: True),
    "gather_elements": (gather_elements, lambda s: s[1] >= 2),
    "clip_dynamic": (clip_dynamic, lambda s: True),
    "gated": (gated, lambda s: True),
    "layer_norm": (layer_norm, lambda s: s[1] >= 3),
}
