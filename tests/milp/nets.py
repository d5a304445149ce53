"""Tiny ONNX networks for the MILP tests and an exact oracle by activation-pattern enumeration.

The oracle: for a ReLU MLP, fixing which hidden neurons are active makes the network affine on
the polytope of inputs with that pattern; one LP per pattern (scipy's HiGHS) minimises
``t`` subject to ``coef_k @ y - t <= rhs_k``. The minimum over patterns is ``t*``: the disjunct
is satisfiable iff ``t* <= 0``. It shares no code with the MILP encoding.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import linprog

from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.onnx_builders import gemm_relu_mlp
from verifier.milp.backends import solve
from verifier.milp.encode import encode
from verifier.onnx_import.loader import ImportedModel, import_proto
from verifier.spec.types import InputRegion, OutputCondition, Spec

Layers = list[tuple[np.ndarray, np.ndarray]]


def _model(nodes, inits, in_shape, out_shape) -> ImportedModel:
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    return import_proto(proto, data, "milp-test")


def random_layers(sizes: list[int], rng: np.random.Generator) -> Layers:
    """Float32-representable weights (the oracle must see the weights the model holds)."""
    out = []
    for i, o in zip(sizes[:-1], sizes[1:], strict=True):
        w = (rng.normal(size=(o, i)) / np.sqrt(i)).astype(np.float32).astype(np.float64)
        b = (rng.normal(size=o) * 0.3).astype(np.float32).astype(np.float64)
        out.append((w, b))
    return out


def onnx_mlp(layers: Layers) -> ImportedModel:
    """Gemm + Relu MLP with no Relu after the last layer."""
    proto = gemm_relu_mlp(layers)
    return import_proto(proto, proto.SerializeToString(), "milp-test")


def onnx_cnn(seed: int) -> ImportedModel:
    """Sub(const) -> Conv(2x3x3, pad 1) -> Relu -> Flatten -> Gemm(4) -> Relu -> Gemm(2)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 1, 3, 3)).astype(f32) * f32(0.3), "mean"),
        numpy_helper.from_array((rng.normal(size=(2, 1, 3, 3)) / 3).astype(f32), "cw"),
        numpy_helper.from_array((rng.normal(size=2) * 0.1).astype(f32), "cb"),
        numpy_helper.from_array((rng.normal(size=(4, 18)) / 4).astype(f32), "w1"),
        numpy_helper.from_array((rng.normal(size=4) * 0.1).astype(f32), "b1"),
        numpy_helper.from_array((rng.normal(size=(2, 4)) / 2).astype(f32), "w2"),
        numpy_helper.from_array((rng.normal(size=2) * 0.1).astype(f32), "b2"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["xc"]),
        helper.make_node("Conv", ["xc", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["z"], transB=1),
        helper.make_node("Relu", ["z"], ["h"]),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1),
    ]
    return _model(nodes, inits, (1, 1, 3, 3), (1, 2))


def mlp_forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(layers):
        h = w @ h + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def make_spec(boxes: list[tuple[np.ndarray, np.ndarray]], coef, rhs) -> Spec:
    """Regions with the same condition; coef [D, K, n_out], rhs [D, K]."""
    cond = OutputCondition(np.asarray(coef, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    regions = tuple(InputRegion(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64),
                                cond) for lo, hi in boxes)
    return Spec(regions, len(regions[0].lower), cond.coef.shape[2])


def oracle_min_t(layers: Layers, lower, upper, coef: np.ndarray, rhs: np.ndarray) -> float:
    """min over x in the box of max_k (coef_k @ f(x) - rhs_k), exactly, by enumeration."""
    n_in = layers[0][0].shape[1]
    hidden = [w.shape[0] for w, _ in layers[:-1]]
    best = np.inf
    for pattern in itertools.product([0.0, 1.0], repeat=sum(hidden)):
        a_ub, b_ub = [], []
        m, c = np.eye(n_in), np.zeros(n_in)  # current value = m @ x + c
        pos = 0
        for i, (w, b) in enumerate(layers):
            m, c = w @ m, w @ c + b
            if i == len(layers) - 1:
                break
            p = np.array(pattern[pos:pos + w.shape[0]])
            pos += w.shape[0]
            sign = np.where(p > 0, -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0
            a_ub.append(sign[:, None] * m)
            b_ub.append(-sign * c)
            m, c = p[:, None] * m, p * c
        a_ub.append(coef @ m)
        b_ub.append(rhs - coef @ c)
        a = np.vstack([np.hstack([blk, -np.ones((blk.shape[0], 1)) * (j == len(a_ub) - 1)])
                       for j, blk in enumerate(a_ub)])
        cost = np.zeros(n_in + 1)
        cost[-1] = 1.0
        bounds = list(zip(lower, upper, strict=True)) + [(-1e3, None)]
        res = linprog(cost, A_ub=a, b_ub=np.concatenate(b_ub), bounds=bounds, method="highs")
        if res.status == 0:
            best = min(best, float(res.fun))
    return best



def conv_avgpool_weights(seed: int, side: int = 3, channels: int = 2) -> dict[str, np.ndarray]:
    """Float32-representable weights of ``onnx_conv_avgpool``'s net."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    pooled = channels * ((side - 1) // 2) ** 2
    return {"cw": (rng.normal(size=(channels, 1, 2, 2)) / 2).astype(f32),
            "cb": (rng.normal(size=channels) * 0.1).astype(f32),
            "w": (rng.normal(size=(2, pooled)) / 2).astype(f32),
            "b": (rng.normal(size=2) * 0.1).astype(f32)}


def onnx_conv_avgpool(seed: int, side: int = 3, channels: int = 2) -> ImportedModel:
    """Conv(channels x 2x2) -> Relu -> AveragePool(2x2, stride 2) -> Flatten -> Gemm(2): one
    layer of Relus, like verivital's Convnet_avgpool, on a side x side image."""
    weights = conv_avgpool_weights(seed, side, channels)
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
    ]
    return _model(nodes, inits, (1, 1, side, side), (1, 2))


def conv_avgpool_layers(seed: int) -> Layers:
    """``onnx_conv_avgpool(seed)`` (3x3 image) as a two-layer MLP, written out by hand from
    its weights: conv positions (channel, row, col) row-major, each channel's 2x2 outputs
    averaged by the pool, then the dense layer."""
    wts = {k: v.astype(np.float64) for k, v in conv_avgpool_weights(seed).items()}
    channels = wts["cb"].size
    w1 = np.zeros((channels * 4, 9))
    b1 = np.zeros(channels * 4)
    for c in range(channels):
        for r in range(2):
            for q in range(2):
                row = c * 4 + r * 2 + q
                for dr in range(2):
                    for dq in range(2):
                        w1[row, (r + dr) * 3 + (q + dq)] = wts["cw"][c, 0, dr, dq]
                b1[row] = wts["cb"][c]
    pool = np.kron(np.eye(channels), np.full((1, 4), 0.25))
    return [(w1, b1), (wts["w"] @ pool, wts["b"])]


def crown_encoding(model: ImportedModel, lower, upper, float_errors: bool = True):
    """The MILP encoding of ``model`` over the box [lower, upper] (flat), its big-M constants
    from CROWN's intermediate bounds."""
    graph = model.graph
    shape = graph.inputs[0].shape
    box = Interval(torch.as_tensor(lower).reshape(1, *shape),
                   torch.as_tensor(upper).reshape(1, *shape))
    n_out = int(np.prod(graph.outputs[0].shape))
    res = bound_spec(graph, box, torch.zeros(1, 1, n_out, dtype=torch.float64),
                     torch.zeros(1, 1, dtype=torch.float64), BoundOptions(method="crown"))
    return encode(graph, lower, upper, res.intermediate, res.deltas, float_errors=float_errors)


def output_at(enc, x: np.ndarray) -> np.ndarray:
    """The encoding's output with its input columns fixed at ``x`` (solved by HiGHS)."""
    m = enc.model.copy()
    m.col_lo[0], m.col_hi[0] = x.copy(), x.copy()  # column block 0 is the input
    out = solve(m, 60, "highs")
    assert out.status == "optimal"
    return enc.output.mat @ out.x[enc.output.idx] + enc.output.const
