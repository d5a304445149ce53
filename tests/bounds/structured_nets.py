"""Small random IR graphs with window max, products of two perturbed values and softmax."""

from __future__ import annotations

import numpy as np

from bounds.graph import Graph, Node, TensorInfo


class _Builder:
    def __init__(self, seed: int, shape: tuple[int, ...]):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Node] = []
        self.input = TensorInfo("x", shape)
        self.shapes = {"x": shape}

    def add(self, name, op, inputs, shape, attrs=None, consts=None) -> str:
        self.nodes.append(Node(name, op, tuple(inputs), shape, attrs or {}, consts or {}))
        self.shapes[name] = shape
        return name

    def linear(self, name, x, n_out, scale=1.0) -> str:
        shape = self.shapes[x]
        n_in = shape[-1]
        w = (self.rng.normal(size=(n_out, n_in)) * scale / np.sqrt(n_in)).astype(np.float32)
        b = (self.rng.normal(size=n_out) * 0.1).astype(np.float32)
        return self.add(name, "Linear", (x, None, None), (*shape[:-1], n_out), {}, {1: w, 2: b})

    def conv(self, name, x, c_out, pads=(1, 1, 1, 1)) -> str:
        _, c_in, h, w = self.shapes[x]
        wt = (self.rng.normal(size=(c_out, c_in, 3, 3)) / 3).astype(np.float32)
        b = (self.rng.normal(size=c_out) * 0.1).astype(np.float32)
        shape = (1, c_out, h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2)
        attrs = {"strides": (1, 1), "dilations": (1, 1), "group": 1, "pads": pads}
        return self.add(name, "Conv", (x, None, None), shape, attrs, {1: wt, 2: b})

    def graph(self, out: str) -> Graph:
        return Graph((self.input,), (TensorInfo(out, self.shapes[out]),), tuple(self.nodes))


def maxpool_cnn(seed: int, deep: bool = False) -> Graph:
    """Conv -> Relu [-> Conv] -> MaxPool(3x3, stride 2, pads 1) -> Linear -> Relu -> Linear."""
    b = _Builder(seed, (1, 1, 6, 6))
    h = b.add("relu0", "Relu", (b.conv("conv0", "x", 2),), (1, 2, 6, 6))
    if deep:  # the pool's input is no longer exact under IBP: CROWN refines it
        h = b.conv("conv1", h, 2)
    pool = {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1),
            "dilations": (1, 1), "extra": (0, 0), "count_include_pad": 0}
    p = b.add("pool", "MaxPool", (h,), (1, 2, 3, 3), pool)
    f = b.add("flat", "Reshape", (p,), (1, 18))
    r = b.add("relu1", "Relu", (b.linear("lin0", f, 8),), (1, 8))
    return b.graph(b.linear("out", r, 3))


def reducemax_net(seed: int) -> Graph:
    """Linear -> Relu -> Reshape(3, 4) -> ReduceMax(axis 1) -> Linear."""
    b = _Builder(seed, (1, 4))
    r = b.add("relu0", "Relu", (b.linear("lin0", "x", 12),), (1, 12))
    m = b.add("max", "ReduceMax", (b.add("sq", "Reshape", (r,), (1, 3, 4)),), (1, 3),
              {"axes": (2,), "keepdims": False})
    return b.graph(b.linear("out", m, 3))


def product_net(seed: int) -> Graph:
    """a * b, a / (sigmoid(c) + 0.5) and b * b of linear branches, then Linear."""
    b = _Builder(seed, (1, 4))
    x1, x2, x3 = (b.linear(f"lin{i}", "x", 5) for i in range(3))
    prod = b.add("prod", "Mul", (x1, x2), (1, 5))
    sig = b.add("sig", "Sigmoid", (x3,), (1, 5))
    den = b.add("den", "Add", (sig, None), (1, 5), {}, {1: np.full((1, 1), 0.5, np.float32)})
    quot = b.add("quot", "Div", (x1, den), (1, 5))
    sq = b.add("sq", "Mul", (x2, x2), (1, 5))  # one value twice: coefficients add up
    both = b.add("both", "Add", (b.add("pq", "Add", (prod, quot), (1, 5)), sq), (1, 5))
    r = b.add("relu", "Relu", (b.linear("mix", both, 6),), (1, 6))
    return b.graph(b.linear("out", r, 3))


def attention_net(seed: int, n: int = 3, d: int = 4) -> Graph:
    """One softmax attention head: softmax(Q K^T / 2) V, flattened, then Linear."""
    b = _Builder(seed, (1, n, d))
    q, k, v = (b.linear(name, "x", d) for name in ("q", "k", "v"))
    kt = b.add("kt", "Transpose", (k,), (1, d, n), {"perm": (0, 2, 1)})
    s = b.add("scores", "MatMul", (q, kt), (1, n, n))
    s = b.add("scaled", "Mul", (s, None), (1, n, n), {}, {1: np.full((1, 1, 1), 0.5, np.float32)})
    p = b.add("attn", "Softmax", (s,), (1, n, n), {"axis": 2})
    o = b.add("mix", "MatMul", (p, v), (1, n, d))
    f = b.add("flat", "Reshape", (o,), (1, n * d))
    return b.graph(b.linear("out", f, 3))


def softmax_net(seed: int, axis_last: bool = True) -> Graph:
    """Linear -> Softmax (last axis, or the middle axis of a (1, 3, 2) view) -> Linear."""
    b = _Builder(seed, (1, 4))
    h = b.linear("lin0", "x", 6, scale=2.0)
    if axis_last:
        s = b.add("sm", "Softmax", (h,), (1, 6), {"axis": 1})
    else:
        h = b.add("view", "Reshape", (h,), (1, 3, 2))
        s = b.add("sm3", "Softmax", (h,), (1, 3, 2), {"axis": 1})
        s = b.add("sm", "Reshape", (s,), (1, 6))
    return b.graph(b.linear("out", s, 3))


def softmax_classifier(seed: int) -> Graph:
    """Linear -> Relu -> Linear -> Softmax as the output (specs on probabilities)."""
    b = _Builder(seed, (1, 4))
    r = b.add("relu0", "Relu", (b.linear("lin0", "x", 8),), (1, 8))
    return b.graph(b.add("probs", "Softmax", (b.linear("logits", r, 4, scale=2.0),), (1, 4),
                         {"axis": 1}))
