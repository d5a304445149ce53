"""Tiny hand-built ONNX networks and specs for the attack and validation tests."""

from __future__ import annotations

import numpy as np
import pytest

from bounds.graph import Graph, Node, TensorInfo
from tests.onnx_builders import gemm_relu_mlp
from verifier.onnx_import.loader import ImportedModel
from verifier.spec.types import InputRegion, OutputCondition, Spec


def mlp_graph(layers: list[tuple[np.ndarray, np.ndarray]]) -> Graph:
    """The IR of the MLP, built by hand so these tests do not depend on the importer."""
    nodes, prev = [], "x"
    for i, (w, b) in enumerate(layers):
        consts = {1: w.astype(np.float32), 2: b.astype(np.float32)}
        nodes.append(Node(f"z{i}", "Linear", (prev, None, None), (1, w.shape[0]), consts=consts))
        prev = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(Node(f"h{i}", "Relu", (prev,), (1, w.shape[0])))
            prev = f"h{i}"
    n_in, n_out = layers[0][0].shape[1], layers[-1][0].shape[0]
    return Graph((TensorInfo("x", (1, n_in), "x"),), (TensorInfo(prev, (1, n_out), "y"),),
                 tuple(nodes))


def mlp_model(layers: list[tuple[np.ndarray, np.ndarray]], batch: int | str = 1) -> ImportedModel:
    """Gemm/Relu MLP (no Relu after the last layer): ONNX bytes plus its hand-built IR."""
    n_in = layers[0][0].shape[1]
    proto = gemm_relu_mlp(layers, batch)
    return ImportedModel(mlp_graph(layers), proto.SerializeToString(), ("x",), ("y",),
                         ((1, n_in),), "mlp")


def abs_net(batch: int | str = 1) -> ImportedModel:
    """y0 = 2|x0|, y1 = relu(x1) on two inputs."""
    w1 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    w2 = np.array([[2.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    return mlp_model([(w1, np.zeros(3)), (w2, np.zeros(2))], batch)


def make_spec(lower, upper, coef, rhs) -> Spec:
    """One-region spec; coef [D, K, n_out], rhs [D, K]."""
    cond = OutputCondition(np.asarray(coef, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    region = InputRegion(np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64),
                         cond)
    return Spec((region,), len(region.lower), cond.coef.shape[2])


def gap_spec(threshold: float, lower=(-1.0, -1.0), upper=(1.0, 1.0)) -> Spec:
    """Unsafe when y0 - y1 >= threshold, i.e. -y0 + y1 <= -threshold."""
    return make_spec(lower, upper, [[[-1.0, 1.0]]], [[-threshold]])


@pytest.fixture
def net() -> ImportedModel:
    return abs_net()
