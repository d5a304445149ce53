"""DynamicSlice (bounds/rules/dynamic_slice.py): IBP and the CROWN step enclose the values at
points sampled in the box, the start included; exact when the start is fixed; starts that
clamp the slice are refused; the engines (IBP, CROWN, alpha-CROWN) stay sound on a small
network that slices at input positions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Node
from bounds.registry import UnsupportedOpError, rules
from bounds.types import Interval
from tests.onnx_import.test_dynamic_slice import N_DATA, N_IN, load, patch_model, valid_starts

F64 = torch.float64
SHAPE = (3, 4, 5)
LENGTHS = (2, 3)
RULE = rules().get("DynamicSlice")


def _node(const: np.ndarray | None = None) -> Node:
    out = (3, *LENGTHS)
    if const is None:
        return Node("y", "DynamicSlice", ("data", "start"), out,
                    {"axes": (1, 2), "lengths": LENGTHS}, {})
    return Node("y", "DynamicSlice", (None, "start"), out,
                {"axes": (1, 2), "lengths": LENGTHS}, {0: const})


def _start_ints(rng, batch: int, fixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer start ranges [a, c] ([B, 2]) inside the domain, from 0 or from the end."""
    a, c = np.zeros((batch, 2)), np.zeros((batch, 2))
    for b in range(batch):
        for i, (d, k) in enumerate(zip(SHAPE[1:], LENGTHS, strict=True)):
            choices = valid_starts(d, k)
            positive = rng.random() < 0.7
            branch = [s for s in choices if (s >= 0) == positive]
            a[b, i] = int(rng.choice(branch))
            c[b, i] = a[b, i] if fixed else int(rng.choice([s for s in branch if s >= a[b, i]]))
    return a, c


def _start_box(rng, batch: int, fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Real start intervals whose floors are the ranges of ``_start_ints`` (the rule reads
    floor(s))."""
    a, c = _start_ints(rng, batch, fixed)
    lo, hi = a + rng.uniform(0, 0.5, a.shape), c + rng.uniform(0.5, 0.99, c.shape)
    return torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64)


def _data_box(rng, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    mid = torch.tensor(rng.normal(size=(batch, *SHAPE)), dtype=F64)
    rad = torch.tensor(rng.uniform(0, 0.5, (batch, *SHAPE)), dtype=F64)
    return mid - rad, mid + rad


def _points(rng, lo, hi, n: int) -> torch.Tensor:
    """n points per box [n, B, ...] (uniform, the two corners first)."""
    u = torch.tensor(rng.uniform(size=(n, *lo.shape)), dtype=F64)
    u[0], u[1] = 0.0, 1.0
    return torch.minimum(torch.maximum(lo + u * (hi - lo), lo), hi)


@pytest.mark.parametrize("fixed", [False, True], ids=["range", "fixed"])
@pytest.mark.parametrize("const", [False, True], ids=["dynamic-data", "constant-data"])
def test_ibp_and_backward_enclose_sampled_points(fixed, const):
    rng = np.random.default_rng(7 + fixed + 2 * const)
    batch, n_spec = 6, 3
    s_lo, s_hi = _start_box(rng, batch, fixed)
    d_lo, d_hi = _data_box(rng, batch)
    data = torch.tensor(rng.normal(size=SHAPE), dtype=F64) if const else None
    node = _node(None if data is None else data.numpy())
    args = [data if const else Interval(d_lo, d_hi), Interval(s_lo, s_hi)]
    box = RULE.ibp(node, args)
    coef = torch.tensor(rng.normal(size=(batch, n_spec, *node.shape)), dtype=F64)
    coefs, offset = RULE.backward(node, coef, args)
    assert coefs[1] is None
    starts = _points(rng, s_lo, s_hi, 40)
    values = _points(rng, d_lo, d_hi, 40)
    for s, x in zip(starts, values, strict=True):
        y = RULE.forward(node, [data if const else x, s])
        assert torch.isfinite(y).all()
        assert (box.lower <= y).all() and (y <= box.upper).all()
        linear = (coef * y.unsqueeze(1)).flatten(2).sum(-1)
        bound = offset.clone()
        if coefs[0] is not None:
            bound = bound + (coefs[0] * x.unsqueeze(1)).flatten(2).sum(-1)
        assert (bound <= linear + 1e-9).all()
        if fixed:  # a fixed start: the step is the exact linear map
            torch.testing.assert_close(bound, linear)
    if fixed and not const:
        point = RULE.ibp(node, [Interval(d_lo, d_lo), Interval(s_lo, s_hi)])
        torch.testing.assert_close(point.lower, RULE.forward(node, [d_lo, s_lo]))
        torch.testing.assert_close(point.upper, point.lower)


def test_ibp_is_the_window_min_and_max():
    """One axis of size 6, length 2, start in [1, 3]: output j ranges over data[1 + j .. 3 + j]."""
    node = Node("y", "DynamicSlice", ("data", "start"), (2,), {"axes": (0,), "lengths": (2,)}, {})
    lo = torch.tensor([[5.0, 1.0, 4.0, 2.0, 8.0, 3.0]], dtype=F64)
    box = RULE.ibp(node, [Interval(lo, lo + 1), Interval(torch.tensor([[1.0]], dtype=F64),
                                                         torch.tensor([[3.5]], dtype=F64))])
    assert box.lower.tolist() == [[1.0, 2.0]]
    assert box.upper.tolist() == [[5.0, 9.0]]


@pytest.mark.parametrize("start", [(2.0, 3.0), (-1.0, -1.0), (-3.0, 0.0), (-9.0, -7.0),
                                   (0.0, float("inf")), (float("nan"), 0.0)])
def test_starts_that_clamp_are_refused(start):
    """Axis of size 4, length 2: starts 0..2 and -4..-3 are the domain."""
    node = Node("y", "DynamicSlice", ("data", "start"), (2,), {"axes": (0,), "lengths": (2,)}, {})
    data = torch.zeros((1, 4), dtype=F64)
    s = Interval(torch.tensor([[start[0]]], dtype=F64), torch.tensor([[start[1]]], dtype=F64))
    with pytest.raises(UnsupportedOpError, match="clamps the slice"):
        RULE.ibp(node, [Interval(data, data), s])


def test_forward_is_nan_where_onnx_would_shorten_the_output():
    node = Node("y", "DynamicSlice", ("data", "start"), (2,), {"axes": (0,), "lengths": (2,)}, {})
    starts = torch.tensor([[3.0], [4.0], [-1.0], [-2.0], [-5.0], [float("nan")], [0.0], [-4.0]],
                          dtype=F64)
    data = torch.arange(4, dtype=F64).expand(len(starts), 4)
    y = RULE.forward(node, [data, starts])
    assert torch.isnan(y[:6]).all()
    assert y[6:].tolist() == [[0.0, 1.0], [0.0, 1.0]]


def _network(seed: int = 0) -> onnx.ModelProto:
    """patch_model (two Slices at input positions) followed by Flatten, Gemm, Relu, Gemm."""
    model = patch_model(LENGTHS)
    rng = np.random.default_rng(seed)
    n_slice = 3 * LENGTHS[0] * LENGTHS[1]
    inits = {"w1": rng.normal(size=(n_slice, 8)) / 3, "b1": rng.normal(size=8),
             "w2": rng.normal(size=(8, 2)) / 3, "b2": rng.normal(size=2)}
    g = model.graph
    g.initializer.extend(numpy_helper.from_array(v.astype(np.float32), k)
                         for k, v in inits.items())
    g.node.extend([helper.make_node("Flatten", ["y"], ["flat_y"], axis=0),
                   helper.make_node("MatMul", ["flat_y", "w1"], ["h"]),
                   helper.make_node("Add", ["h", "b1"], ["hb"]),
                   helper.make_node("Relu", ["hb"], ["r"]),
                   helper.make_node("MatMul", ["r", "w2"], ["o"]),
                   helper.make_node("Add", ["o", "b2"], ["out"])])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
@pytest.mark.parametrize("fixed", [False, True], ids=["range", "fixed"])
def test_engines_enclose_the_network_on_sampled_points(method, fixed):
    graph = load(_network()).graph
    rng = np.random.default_rng(3)
    batch = 4
    lo = rng.uniform(-1.0, 0.5, (batch, N_IN))
    hi = lo + rng.uniform(0.0, 0.5, (batch, N_IN))
    a, c = _start_ints(rng, batch, fixed)
    # the model's start is the Cast of the input (truncation toward zero): s > 0 comes from
    # [s, s + 1), s < 0 from (s - 1, s]
    lo[:, N_DATA:] = np.where(a >= 0, a, a - 0.9)
    hi[:, N_DATA:] = np.where(c >= 0, c + 0.9, c)
    box = Interval(torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64))
    coef = torch.tensor(rng.normal(size=(batch, 3, 2)), dtype=F64)
    res = bound_spec(graph, box, coef, torch.zeros((1, 3), dtype=F64),
                     BoundOptions(method=method, intermediate="crown", alpha_iterations=5))
    assert torch.isfinite(res.lower).all()
    for x in _points(rng, box.lower, box.upper, 64):
        y = run_graph(graph, x)[0]
        value = (coef * y.reshape(batch, 1, 2)).sum(-1)
        assert (res.lower <= value + 1e-6).all(), (res.lower, value)
