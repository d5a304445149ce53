"""Random small ONNX networks for soundness fuzzing, each with a MILP-encodable twin.

Kinds:

* ``mlp``: Gemm (or MatMul + Add) layers with ReLU, 1-3 hidden layers of width 2-8.
* ``mixed``: the same with each hidden layer's activation drawn from ReLU, LeakyRelu, Abs, Clip
  (HardTanh, ReLU6 and other ranges). A net with a Clip goes to the oracle as it is (the MILP
  encodes Clip exactly); a net with LeakyRelu/Abs only goes to the oracle as a *twin* (which
  cross-checks the direct LeakyRelu/Abs encodings of the ``milp`` method): a ReLU MLP computing the
  same function in real arithmetic, from relu(z) - alpha relu(-z) = LeakyRelu(z) and
  relu(z) + relu(-z) = |z| (the layer gets weights [W; -W], the next layer [V, -alpha V] or
  [V, V]). alpha is a power of two, so alpha V is exact in float32 and the twin is exactly the
  same real function; only the float32 rounding differs (see ``harness`` for how that is
  handled).
* ``cnn``: Conv (kernel 2-3, stride 1-2, pad 0-1) -> Relu [-> MaxPool 2x2, stride 1-2] ->
  Flatten -> Gemm [-> Relu -> Gemm].

Inputs are small (2-6 values: the input-split path) or larger (17-30 values: the ReLU-split
path). Weights are float32; everything is deterministic in the generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32
LEAKY_ALPHAS = (0.5, 0.25, 0.125, 0.0625, 0.015625)
CLIP_RANGES = ((-1.0, 1.0), (0.0, 1.0), (-0.5, 2.0), (0.0, 6.0), (-2.0, 0.5))


@dataclass(frozen=True)
class Net:
    """A generated network: the ONNX model under test and its ReLU-only twin for the oracle."""

    kind: str
    onnx_bytes: bytes
    oracle_bytes: bytes  # == onnx_bytes when the model itself is ReLU-only
    input_shape: tuple[int, ...]  # ONNX input shape, batch 1 included
    n_out: int
    arch: str  # a short human-readable description

    @property
    def n_in(self) -> int:
        return int(np.prod(self.input_shape))


@dataclass(frozen=True)
class _Dense:
    weight: np.ndarray  # float32 [out, in]
    bias: np.ndarray  # float32 [out]
    act: str  # relu | leaky | abs | clip | none (last layer)
    alpha: float = 0.0
    clip: tuple[float, float] = (0.0, 0.0)


def _proto(nodes, inits, in_shape, n_out) -> bytes:
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _dense_nodes(layers: list[_Dense], src: str, matmul: bool, prefix: str = "l"):
    """ONNX nodes and initializers of a dense stack reading ``src`` ([1, in]) and writing y."""
    nodes, inits, prev = [], [], src
    for i, layer in enumerate(layers):
        w, b = f"{prefix}w{i}", f"{prefix}b{i}"
        last = i == len(layers) - 1
        z = "y" if last else f"{prefix}z{i}"
        if matmul:  # MatMul + Add, as many exporters write it (the importer fuses them)
            inits += [numpy_helper.from_array(np.ascontiguousarray(layer.weight.T), w),
                      numpy_helper.from_array(layer.bias, b)]
            nodes += [helper.make_node("MatMul", [prev, w], [z + "_mm"]),
                      helper.make_node("Add", [z + "_mm", b], [z])]
        else:
            inits += [numpy_helper.from_array(layer.weight, w),
                      numpy_helper.from_array(layer.bias, b)]
            nodes.append(helper.make_node("Gemm", [prev, w, b], [z], transB=1))
        if layer.act == "relu":
            nodes.append(helper.make_node("Relu", [z], [f"{prefix}h{i}"]))
        elif layer.act == "leaky":
            nodes.append(helper.make_node("LeakyRelu", [z], [f"{prefix}h{i}"], alpha=layer.alpha))
        elif layer.act == "abs":
            nodes.append(helper.make_node("Abs", [z], [f"{prefix}h{i}"]))
        elif layer.act == "clip":
            lo, hi = f"{prefix}lo{i}", f"{prefix}hi{i}"
            inits += [numpy_helper.from_array(np.array(layer.clip[0], F32), lo),
                      numpy_helper.from_array(np.array(layer.clip[1], F32), hi)]
            nodes.append(helper.make_node("Clip", [z, lo, hi], [f"{prefix}h{i}"]))
        prev = f"{prefix}h{i}"
    return nodes, inits


def _relu_twin(layers: list[_Dense]) -> list[_Dense]:
    """A ReLU-only stack computing the same real function (see module doc)."""
    out: list[_Dense] = []
    fold = None  # how the previous layer's doubled output recombines: None | (1, -alpha)
    for layer in layers:
        w, b = layer.weight, layer.bias
        if fold is not None:
            w = np.hstack([w, (fold * w).astype(F32)])
        fold = None
        if layer.act in ("leaky", "abs"):
            fold = F32(-layer.alpha) if layer.act == "leaky" else F32(1.0)
            w, b = np.vstack([w, -w]), np.concatenate([b, -b])
        act = "none" if layer.act == "none" else "relu"
        out.append(_Dense(w.astype(F32), b.astype(F32), act))
    return out


def _act_label(layer: _Dense) -> str:
    if layer.act == "leaky":
        return f"leaky{layer.alpha:g}"
    if layer.act == "clip":
        return f"clip{layer.clip[0]:g},{layer.clip[1]:g}"
    return layer.act


def _random_dense(sizes: list[int], acts: list[str], rng: np.random.Generator) -> list[_Dense]:
    layers = []
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = (rng.normal(size=(o, i)) / np.sqrt(i)).astype(F32)
        b = (rng.normal(size=o) * 0.3).astype(F32)
        act = acts[j] if j < len(acts) else "none"
        alpha = float(rng.choice(LEAKY_ALPHAS)) if act == "leaky" else 0.0
        clip = CLIP_RANGES[int(rng.integers(len(CLIP_RANGES)))] if act == "clip" else (0.0, 0.0)
        layers.append(_Dense(w, b, act, alpha, clip))
    return layers


def _input_size(rng: np.random.Generator) -> int:
    return int(rng.integers(17, 31)) if rng.random() < 0.3 else int(rng.integers(2, 7))


def random_mlp(rng: np.random.Generator, mixed: bool = False) -> Net:
    """A ReLU MLP (``mixed``: hidden activations from ReLU / LeakyRelu / Abs / Clip)."""
    n_in = _input_size(rng)
    depth = int(rng.integers(1, 4))
    hidden = [int(rng.integers(2, 9)) for _ in range(depth)]
    n_out = int(rng.integers(2, 5))
    choices = ["relu", "leaky", "abs", "clip"] if mixed else ["relu"]
    acts = [str(rng.choice(choices)) for _ in hidden]
    if mixed and all(a == "relu" for a in acts):
        acts[int(rng.integers(len(acts)))] = str(rng.choice(["leaky", "abs", "clip"]))
    layers = _random_dense([n_in, *hidden, n_out], acts, rng)
    matmul = bool(rng.random() < 0.3)
    nodes, inits = _dense_nodes(layers, "x", matmul)
    data = _proto(nodes, inits, (1, n_in), n_out)
    oracle = data
    if mixed and "clip" not in acts:
        tn, ti = _dense_nodes(_relu_twin(layers), "x", False)
        oracle = _proto(tn, ti, (1, n_in), n_out)
    arch = "x".join(map(str, [n_in, *hidden, n_out]))
    if mixed:
        arch += " " + ",".join(_act_label(la) for la in layers[:-1])
    return Net("mixed" if mixed else "mlp", data, oracle, (1, n_in), n_out,
               arch + (" matmul" if matmul else ""))


def random_cnn(rng: np.random.Generator) -> Net:
    """Conv -> Relu [-> MaxPool] -> Flatten -> Gemm [-> Relu -> Gemm]."""
    c, hw = int(rng.integers(1, 3)), int(rng.integers(3, 6))
    k = int(rng.integers(2, 4)) if hw > 3 else 2
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
    oc = int(rng.integers(1, 4))
    side = (hw + 2 * pad - k) // stride + 1
    pool = int(rng.integers(1, 3)) if side >= 3 and rng.random() < 0.4 else 0  # pool stride
    conv_side = side
    if pool:
        side = (side - 2) // pool + 1
    flat = oc * side * side
    n_out = int(rng.integers(2, 4))
    cw = (rng.normal(size=(oc, c, k, k)) / np.sqrt(c * k * k)).astype(F32)
    cb = (rng.normal(size=oc) * 0.2).astype(F32)
    inits = [numpy_helper.from_array(cw, "cw"), numpy_helper.from_array(cb, "cb")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[k, k],
                              pads=[pad] * 4, strides=[stride, stride]),
             helper.make_node("Relu", ["c"], ["r"])]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2],
                                      strides=[pool, pool]))
    nodes.append(helper.make_node("Flatten", ["p" if pool else "r"], ["f"], axis=1))
    sizes = [flat, n_out]
    if rng.random() < 0.6:
        sizes = [flat, int(rng.integers(3, 7)), n_out]
    layers = _random_dense(sizes, ["relu"] * (len(sizes) - 2), rng)
    dn, di = _dense_nodes(layers, "f", False)
    data = _proto(nodes + dn, inits + di, (1, c, hw, hw), n_out)
    arch = f"{c}x{hw}x{hw} conv{oc}k{k}s{stride}p{pad} " + (
        f"maxpool2s{pool} ({conv_side}->{side}) " if pool else "") + "x".join(map(str, sizes))
    return Net("cnn", data, data, (1, c, hw, hw), n_out, arch)


def random_net(kind: str, rng: np.random.Generator) -> Net:
    if kind == "mlp":
        return random_mlp(rng)
    if kind == "mixed":
        return random_mlp(rng, mixed=True)
    if kind == "cnn":
        return random_cnn(rng)
    raise ValueError(f"unknown network kind {kind!r}")
