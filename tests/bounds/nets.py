"""Small IR graphs built directly (no importer) for engine tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from bounds.graph import Graph, Node, TensorInfo


def mlp(weights: list[tuple[np.ndarray, np.ndarray]], activation: str = "Relu",
        input_shape: tuple[int, ...] | None = None) -> Graph:
    """Linear -> activation -> ... -> Linear on a [1, n] input (or ``input_shape``)."""
    n_in = weights[0][0].shape[1]
    shape = input_shape or (1, n_in)
    nodes, prev = [], "x"
    if shape != (1, n_in):
        nodes.append(Node("flat", "Reshape", ("x",), (1, n_in)))
        prev = "flat"
    for i, (w, b) in enumerate(weights):
        name = f"lin{i}"
        nodes.append(Node(name, "Linear", (prev, None, None), (1, w.shape[0]), {},
                          {1: w.astype(np.float32), 2: b.astype(np.float32)}))
        prev = name
        if i < len(weights) - 1:
            nodes.append(Node(f"act{i}", activation, (prev,), (1, w.shape[0])))
            prev = f"act{i}"
    return Graph((TensorInfo("x", shape),), (TensorInfo(prev, (1, weights[-1][0].shape[0])),),
                 tuple(nodes))


def with_activation(graph: Graph, op: str, attrs: dict | None = None) -> Graph:
    """``graph`` with every Relu node made ``op`` (with ``attrs``)."""
    nodes = tuple(dataclasses.replace(n, op=op, attrs=dict(attrs or {})) if n.op == "Relu"
                  else n for n in graph.nodes)
    return Graph(graph.inputs, graph.outputs, nodes)


def random_mlp(sizes: list[int], seed: int = 0, activation: str = "Relu") -> Graph:
    rng = np.random.default_rng(seed)
    weights = [(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
               for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    return mlp(weights, activation)
