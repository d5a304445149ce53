"""Window ("patches") coefficients: every window operation equals the dense operation, and
backward passes that keep windows give the dense passes' bounds, which enclose sampled
points (CNNs with strides, asymmetric pads, dilation, groups, residual adds, average pools,
1-d/2-d/3-d convolutions, several domains and spec rows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bounds.engine.patches_step as windows
from bounds.engine import patches
from bounds.engine.crown import backward_bound
from bounds.engine.intermediate import compute_intermediate
from bounds.graph import Graph, Node, TensorInfo
from bounds.registry import rules
from bounds.types import Interval
from tests.bounds.spies import spy

F64 = torch.float64


@pytest.fixture(autouse=True)
def _float64_adjoints(monkeypatch):
    """Window and dense passes are compared to 1e-9 here: float32 adjoints would round
    differently in each (test_adjoint_precision.py checks them, windows included)."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _sparse_rows(shape, rows, spatial, win, seed):
    """[2, rows, *shape] coefficients, each row nonzero on a random window of size ``win``."""
    g = torch.Generator().manual_seed(seed)
    sp = shape[len(shape) - spatial:]
    coef = torch.zeros((2, rows, *shape), dtype=F64)
    for b in range(2):
        for s in range(rows):
            start = [int(torch.randint(0, n - w + 1, (1,), generator=g)) for n, w in
                     zip(sp, win, strict=True)]
            region = (b, s, Ellipsis, *(slice(o, o + w) for o, w in zip(start, win,
                                                                          strict=True)))
            coef[region] = torch.randn(coef[region].shape, generator=g, dtype=F64)
    return coef


@pytest.mark.parametrize("shape,spatial,win", [((1, 3, 9, 8), 2, (2, 3)), ((1, 2, 24), 1, (2,)),
                                               ((1, 2, 5, 6, 5), 3, (1, 2, 2))])
def test_windows_round_trip_and_dot(shape, spatial, win):
    coef = _sparse_rows(shape, 4, spatial, win, 0)
    p = patches.from_dense(coef, shape, spatial)
    assert p is not None and p.win == win
    torch.testing.assert_close(p.to_dense(), coef, rtol=0, atol=0)
    plane = torch.randn((2, *shape), dtype=F64)
    want = (coef * plane.unsqueeze(1)).flatten(2).sum(-1)
    torch.testing.assert_close(p.dot(plane), want, rtol=1e-12, atol=1e-12)
    per_row = torch.randn((2, 4, *shape), dtype=F64)
    torch.testing.assert_close(p.dot(per_row), (coef * per_row).flatten(2).sum(-1),
                               rtol=1e-12, atol=1e-12)
    lo = -torch.rand((2, *shape), dtype=F64)
    hi = torch.rand((2, *shape), dtype=F64)
    dense = (coef.clamp(min=0) * lo.unsqueeze(1) + coef.clamp(max=0) * hi.unsqueeze(1))
    torch.testing.assert_close(patches.concretize(p, lo, hi), dense.flatten(2).sum(-1))


def test_dense_rows_stay_dense():
    coef = torch.randn((1, 3, 1, 2, 8, 8), dtype=F64)
    assert patches.from_dense(coef, (1, 2, 8, 8), 2) is None


CONVS = [
    # (channels in, out, spatial input, kernel, strides, dilations, pads, group)
    (2, 3, (12,), (3,), (2,), (1,), (1, 0), 1),
    (3, 4, (10, 9), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
    (2, 4, (11, 10), (3, 2), (2, 1), (1, 2), (1, 0, 2, 1), 2),
    (4, 4, (12, 12), (2, 3), (3, 2), (2, 1), (0, 2, 1, 0), 4),
    (2, 2, (7, 8, 7), (3, 2, 2), (1, 2, 1), (1, 1, 2), (1, 0, 1, 0, 1, 1), 1),
]


def _conv_node(case, seed=0):
    cin, cout, sp, kernel, strides, dils, pads, group = case
    rng = np.random.default_rng(seed)
    n = len(sp)
    out = tuple((pads[i] + sp[i] + pads[i + n] - dils[i] * (kernel[i] - 1) - 1) // strides[i]
                + 1 for i in range(n))
    attrs = {"strides": strides, "dilations": dils, "pads": pads, "group": group}
    consts = {1: rng.standard_normal((cout, cin // group, *kernel)),
              2: rng.standard_normal(cout)}
    return Node("conv", "Conv", ("x", None, None), (1, cout, *out), attrs, consts), (1, cin, *sp)


@pytest.mark.parametrize("case", CONVS)
def test_conv_step_equals_the_dense_rule(case, monkeypatch):
    monkeypatch.setattr(patches, "DENSE_SHARE", 100.0)  # windows however large
    node, in_shape = _conv_node(case)
    spatial = len(case[2])
    coef = _sparse_rows(node.shape, 5, spatial, (1,) * spatial, 1)
    p = patches.from_dense(coef, node.shape, spatial)
    w = torch.as_tensor(node.consts[1])
    bias = torch.as_tensor(node.consts[2])
    q, offset = patches.conv_step(p, w, node.attrs, in_shape, bias)
    x = torch.zeros((2, *in_shape), dtype=F64)
    want, want_offset = rules().get("Conv").backward(node, coef, [Interval(x, x), w, bias])
    torch.testing.assert_close(q.to_dense(), want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(offset, want_offset, rtol=1e-12, atol=1e-12)
    # a second step from the grown windows (border cells zeroed) still matches
    r, _ = patches.conv_step(q, torch.ones((in_shape[1], in_shape[1] // case[7],
                                           *case[3]), dtype=F64),
                             {**node.attrs, "pads": case[6]}, in_shape, None)
    assert r.to_dense().shape[2:] == in_shape


def test_add_merges_offset_windows():
    shape = (1, 2, 9, 9)
    a = _sparse_rows(shape, 3, 2, (1, 1), 2)
    p = patches.from_dense(a, shape, 2)
    w = torch.randn((2, 2, 3, 3), dtype=F64)
    q, _ = patches.conv_step(p, w, {"strides": (1, 1), "dilations": (1, 1), "group": 1,
                                    "pads": (1, 1, 1, 1)}, shape, None)
    merged = patches.add(p, q)
    assert merged is not None
    torch.testing.assert_close(merged.to_dense(), a + q.to_dense(), rtol=0, atol=1e-14)


# ---------------------------------------------------------------- engine: windows vs dense

class _Net:
    def __init__(self, shape, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.shapes = [], {"x": shape}

    def add(self, name, op, inputs, shape, attrs=None, consts=None):
        self.nodes.append(Node(name, op, tuple(inputs), shape, attrs or {}, consts or {}))
        self.shapes[name] = shape
        return name

    def conv(self, name, x, cout, k=3, stride=1, pads=None, dil=1, group=1):
        shape = self.shapes[x]
        spatial = len(shape) - 2
        pads = pads or (1,) * (2 * spatial)
        out = tuple((pads[i] + shape[2 + i] + pads[i + spatial] - dil * (k - 1) - 1) // stride
                    + 1 for i in range(spatial))
        w = self.rng.normal(size=(cout, shape[1] // group, *(k,) * spatial)) / k
        attrs = {"strides": (stride,) * spatial, "dilations": (dil,) * spatial, "pads": pads,
                 "group": group}
        return self.add(name, "Conv", (x, None, None), (1, cout, *out), attrs,
                        {1: w.astype(np.float32), 2: self.rng.normal(size=cout) * 0.1})

    def relu(self, name, x):
        return self.add(name, "Relu", (x,), self.shapes[x])

    def graph(self, out):
        return Graph((TensorInfo("x", self.shapes["x"]),), (TensorInfo(out, self.shapes[out]),),
                     tuple(self.nodes))


def _resnet_2d(seed=0) -> Graph:
    n = _Net((1, 2, 12, 11), seed)
    h = n.relu("r0", n.conv("c0", "x", 4, stride=2, pads=(1, 0, 0, 1)))
    a = n.conv("c1", n.relu("r1", n.conv("c1a", h, 4, dil=2, pads=(2, 2, 2, 2))), 4)
    s = n.add("add", "Add", (a, h), n.shapes[h])
    r = n.relu("r2", s)
    g = n.relu("r3", n.conv("c2", r, 4, group=2))
    pool = {"kernel_shape": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0),
            "dilations": (1, 1), "extra": (0, 0), "count_include_pad": 0}
    shape = n.shapes[g]
    p = n.add("pool", "AveragePool", (g,), (1, shape[1], shape[2] // 2, shape[3] // 2), pool)
    q = n.relu("r4", n.conv("c3", p, 3, k=1, pads=(0, 0, 0, 0)))
    d = n.add("sub", "Sub", (q, None), n.shapes[q], {}, {1: np.full((1, 3, 1, 1), 0.25)})
    return n.graph(n.relu("r5", d))


def _conv_1d(seed=1) -> Graph:
    n = _Net((1, 2, 20), seed)
    h = n.relu("r0", n.conv("c0", "x", 3, stride=2, pads=(2, 1)))
    return n.graph(n.relu("r1", n.conv("c1", h, 3, dil=2, pads=(0, 3))))


def _conv_3d(seed=2) -> Graph:
    n = _Net((1, 1, 7, 8, 7), seed)
    h = n.relu("r0", n.conv("c0", "x", 2))
    return n.graph(n.relu("r1", n.conv("c1", h, 2, stride=2, pads=(1, 0, 1, 0, 1, 1))))


NETS = [_resnet_2d, _conv_1d, _conv_3d]


@pytest.fixture(params=["default", "whole pass"])
def share(request, monkeypatch):
    """The default window threshold, and windows kept however large (every window step,
    the window merges and the concretisation at the input are then taken)."""
    if request.param == "whole pass":
        monkeypatch.setattr(patches, "DENSE_SHARE", 100.0)
    return request.param


def _box(graph, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = graph.inputs[0].shape
    centre = torch.randn((batch, *shape), generator=g, dtype=F64)
    return Interval(centre - 0.3, centre + 0.3)


def _without_windows(monkeypatch):
    monkeypatch.setattr(windows, "start", lambda graph, name, coef: coef)


def _intermediates(graph, box):
    return compute_intermediate(graph, box, method="crown")


@pytest.mark.parametrize("net", NETS)
def test_windows_give_the_dense_bounds(net, share, monkeypatch):
    graph = net()
    box = _box(graph)
    with_windows = _intermediates(graph, box)
    _without_windows(monkeypatch)
    dense = _intermediates(graph, box)
    for name in dense.bounds:
        torch.testing.assert_close(with_windows.bounds[name].lower, dense.bounds[name].lower,
                                   rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(with_windows.bounds[name].upper, dense.bounds[name].upper,
                                   rtol=1e-9, atol=1e-9)


def _forward_all(graph, x):
    values = {"x": x}
    for node in graph.nodes:
        args = [values[i] if i is not None else torch.as_tensor(node.consts[p], dtype=F64)
                for p, i in enumerate(node.inputs)]
        values[node.name] = rules().get(node.op).forward(node, args)
    return values


@pytest.mark.parametrize("net", NETS)
def test_window_bounds_enclose_sampled_points(net, share):
    graph = net()
    box = _box(graph, seed=3)
    inter = _intermediates(graph, box)
    for _ in range(20):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        for name, v in _forward_all(graph, x).items():
            bound = inter.bounds[name]
            assert bool((v >= bound.lower - 1e-9).all()), name
            assert bool((v <= bound.upper + 1e-9).all()), name


@pytest.mark.parametrize("net", NETS)
def test_window_start_rows_match_dense_start_rows(net, share, monkeypatch):
    """One pass from one-hot rows of every value a Conv takes (windows), against dense."""
    graph = net()
    box = _box(graph)
    inter = _intermediates(graph, box)
    names = [n.name for n in graph.nodes if n.op in ("Relu", "Add", "Conv")]
    results = {}
    for name in names:
        shape = graph.shape_of(name)
        k = math.prod(shape)
        coef = torch.eye(k, dtype=F64)[: min(k, 7)].reshape(1, -1, *shape).expand(2, -1,
                                                                                   *shape)
        results[name] = backward_bound(inter, name, torch.cat([coef, -coef], 1)).lower
    _without_windows(monkeypatch)
    for name in names:
        shape = graph.shape_of(name)
        k = math.prod(shape)
        coef = torch.eye(k, dtype=F64)[: min(k, 7)].reshape(1, -1, *shape).expand(2, -1,
                                                                                   *shape)
        dense = backward_bound(inter, name, torch.cat([coef, -coef], 1)).lower
        torch.testing.assert_close(results[name], dense, rtol=1e-9, atol=1e-9)


def test_windows_are_used(monkeypatch):
    """The 2-d net's passes take window steps of every kind and concretise windows at the
    input (the comparisons above are not vacuous)."""
    monkeypatch.setattr(patches, "DENSE_SHARE", 100.0)
    steps = spy(monkeypatch, windows, "window_step")
    concretised = spy(monkeypatch, patches, "concretize")
    graph = _resnet_2d()
    _intermediates(graph, _box(graph))
    taken = {c.args[1].op for c in steps if c.result is not None}
    assert {"Conv", "Relu", "Add", "Sub", "AveragePool"} <= taken
    assert concretised


@pytest.mark.parametrize("net", [_resnet_2d, _conv_1d])
def test_alpha_with_windows_encloses_points_and_matches_dense(net, share, monkeypatch):
    """alpha-CROWN with intermediate alphas (per-row planes gathered over windows, gradients
    through the window steps): sampled outputs lie above the bounds, and the bounds equal
    the dense passes' (the same optimisation, reordered sums)."""
    from bounds.engine.spec_bounds import BoundOptions, bound_spec

    graph = net()
    box = _box(graph, batch=1, seed=5)
    n_out = math.prod(graph.outputs[0].shape)
    g = torch.Generator().manual_seed(0)
    coef = torch.randn((1, 4, n_out), generator=g, dtype=F64)
    rhs = torch.zeros((1, 4), dtype=F64)
    options = BoundOptions(method="alpha", alpha_iterations=3, intermediate_alpha_iterations=2)
    lower = bound_spec(graph, box, coef, rhs, options).lower
    for _ in range(20):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[graph.outputs[0].name].reshape(1, n_out)
        assert bool(((coef[0] @ y[0]) - rhs[0] >= lower[0] - 1e-9).all())
    _without_windows(monkeypatch)
    dense = bound_spec(graph, box, coef, rhs, options).lower
    torch.testing.assert_close(lower, dense, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("net", NETS)
def test_neuron_rows_start_equals_dense_one_hot_rows(net):
    """Windows given by the caller (``neuron_rows``) bound like the dense one-hot rows."""
    graph = net()
    box = _box(graph)
    inter = _intermediates(graph, box)
    for node in graph.nodes:
        spatial = windows.conv_like(graph, node.name)
        if not spatial:
            continue
        shape = graph.shape_of(node.name)
        k = math.prod(shape)
        idx = torch.stack([torch.arange(0, k, max(1, k // 5))[:5],
                           torch.arange(k - 1, -1, -max(1, k // 5))[:5]])  # [2, 5]
        rows = patches.neuron_rows(shape, spatial, idx, F64)
        onehot = torch.zeros((2, 5, k), dtype=F64).scatter_(2, idx.unsqueeze(-1), 1.0)
        dense = torch.cat([onehot, -onehot], 1).reshape(2, 10, *shape)
        torch.testing.assert_close(rows.to_dense(), dense, rtol=0, atol=0)
        got = backward_bound(inter, node.name, rows).lower
        want = backward_bound(inter, node.name, dense).lower
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def _flat_head(seed=4) -> Graph:
    """Conv layers under a Reshape to a flat output: spec rows start dense and windows begin
    at the first convolutional value the pass reaches."""
    n = _Net((1, 2, 12, 12), seed)
    h = n.relu("r0", n.conv("c0", "x", 3, stride=2, pads=(1, 0, 0, 1)))
    h = n.relu("r1", n.conv("c1", h, 3))
    k = math.prod(n.shapes[h])
    return n.graph(n.add("flat", "Reshape", (h,), (1, k)))


def test_windows_start_after_a_reshape(share, monkeypatch):
    graph = _flat_head()
    box = _box(graph)
    inter = _intermediates(graph, box)
    k = graph.outputs[0].shape[-1]
    coef = torch.zeros((2, 3, k), dtype=F64)
    coef[:, 0, 5], coef[:, 1, 17], coef[:, 2, k - 1] = 1.0, -2.0, 0.5
    starts = spy(monkeypatch, windows, "start")
    got = backward_bound(inter, "flat", coef).lower
    assert any(c.args[1] == "r1" and isinstance(c.result, patches.Patches) for c in starts)
    _without_windows(monkeypatch)
    want = backward_bound(inter, "flat", coef).lower
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for _ in range(20):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)["flat"].reshape(2, 1, k)
        assert bool(((coef * y).sum(-1) >= got - 1e-9).all())
