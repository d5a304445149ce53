"""Nonnegative weighted sums bounded from above in float32 (bounds/float32_upper.py): the
bound is never below the float64 value (operands from subnormal to large, long sums), is
tight, and the IBP and rounding allowances of Conv, ConvTranspose and Linear that use it
enclose sampled points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bounds.float32_upper as float32_upper
from bounds.engine.ibp import propagate_node
from bounds.graph import Graph, Node, TensorInfo
from bounds.registry import rules
from bounds.types import Interval
from tests.bounds.test_adjoint_precision import NODES

F64 = torch.float64


@pytest.fixture
def always_float32(monkeypatch):
    monkeypatch.setattr(float32_upper, "MIN_ELEMENTS", 0)


def _spread(shape, g, low_exp, high_exp):
    """Nonnegative values whose exponents spread uniformly over [low_exp, high_exp]."""
    exp = low_exp + (high_exp - low_exp) * torch.rand(shape, generator=g, dtype=F64)
    return torch.rand(shape, generator=g, dtype=F64) * 10.0**exp


@pytest.mark.parametrize("low_exp,high_exp", [(-3, 3), (-45, -30), (-40, 20)])
def test_upper_bound_of_matrix_products(always_float32, low_exp, high_exp):
    g = torch.Generator().manual_seed(low_exp)
    for n in (1, 7, 300, 5000):
        x = _spread((40, n), g, low_exp, high_exp)
        w = _spread((n, 30), g, low_exp, high_exp)
        exact = x @ w
        upper = float32_upper.nonneg_sum_upper(lambda ops: ops[0] @ ops[1], [x, w], n,
                                               exact.numel())
        assert upper.dtype == F64
        assert bool((upper >= exact).all())
        underflow = 2.0**-120 * (n + 1) * (float(x.max()) + float(w.max()) + 1)
        in_range = exact < 1e37  # (beyond float32's range: +inf, still an upper bound)
        assert bool((upper <= exact * (1 + 1e-3) + underflow)[in_range].all())  # and tight


def test_upper_bound_of_convolutions(always_float32):
    g = torch.Generator().manual_seed(3)
    x = _spread((5, 6, 11, 9), g, -4, 4)
    w = _spread((8, 6, 3, 3), g, -4, 4)
    exact = F.conv2d(x, w, padding=1)
    upper = float32_upper.nonneg_sum_upper(lambda ops: F.conv2d(ops[0], ops[1], padding=1),
                                           [x, w], 6 * 9, exact.numel())
    assert bool((upper >= exact).all())
    assert bool((upper <= exact * (1 + 1e-4)).all())


def test_infinite_operands_keep_the_float64_arithmetic(always_float32):
    x = torch.ones((3, 4), dtype=F64)
    x[0, 0] = float("inf")
    w = torch.ones((4, 2), dtype=F64)
    upper = float32_upper.nonneg_sum_upper(lambda ops: ops[0] @ ops[1], [x, w], 4, 6)
    assert torch.isinf(upper[0]).all() and torch.equal(upper[1:], x[1:] @ w)


def test_small_outputs_and_reduced_precision_stay_exact(monkeypatch):
    x, w = torch.rand((3, 4), dtype=F64), torch.rand((4, 2), dtype=F64)
    calls = []

    def apply(ops):
        calls.append(ops[0].dtype)
        return ops[0] @ ops[1]

    float32_upper.nonneg_sum_upper(apply, [x, w], 4, 6)  # below MIN_ELEMENTS
    monkeypatch.setattr(float32_upper, "MIN_ELEMENTS", 0)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        float32_upper.nonneg_sum_upper(apply, [x, w], 4, 6)
    finally:
        torch.set_float32_matmul_precision(before)
    float32_upper.nonneg_sum_upper(apply, [x, w], 4, 6)
    assert calls == [F64, F64, torch.float32]


def test_onednn_reduced_precision_is_refused():
    conv = torch.backends.mkldnn.conv
    if not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no oneDNN fp32_precision setting")
    before = conv.fp32_precision
    try:
        conv.fp32_precision = "bf16"
        assert not float32_upper.full_float32(torch.device("cpu"))
    finally:
        conv.fp32_precision = before
    assert float32_upper.full_float32(torch.device("cpu"))


@pytest.mark.parametrize("make", NODES)
def test_weighted_ibp_with_float32_radius_encloses_points(make, always_float32):
    """IBP of the node (float32 radius and rounding scale) encloses its outputs at sampled
    inputs, and the rounding allowance covers float32 evaluation of the node."""
    node, in_shape = make()
    graph = Graph((TensorInfo("x", in_shape),), (TensorInfo(node.name, node.shape),), (node,))
    g = torch.Generator().manual_seed(0)
    centre = torch.randn((3, *in_shape[1:]), generator=g, dtype=F64) * 4
    box = Interval(centre - 0.5, centre + 0.5)
    out, delta = propagate_node(graph, node, {"x": box}, torch.device("cpu"), F64)
    assert delta is not None
    rule = rules().get(node.op)
    consts = [torch.as_tensor(node.consts[i], dtype=F64) for i in (1, 2)]
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, generator=g,
                                                            dtype=F64)
        y = rule.forward(node, [x, *consts])
        y32 = rule.forward(node, [x.float(), *(c.float() for c in consts)]).to(F64)
        for value in (y, y32):
            assert bool((value >= out.lower).all() and (value <= out.upper).all())
        assert bool(((y32 - y).abs() <= delta).all())


def test_wide_ibp_radius_is_not_loose(always_float32):
    """A Linear with 784 inputs: the float32 radius is within 1e-4 of the float64 one."""
    rng = np.random.default_rng(0)
    node = Node("lin", "Linear", ("x", None, None), (1, 100), {},
                {1: rng.standard_normal((100, 784)).astype(np.float32),
                 2: rng.standard_normal(100).astype(np.float32)})
    box = Interval(torch.zeros((2, 784), dtype=F64), torch.full((2, 784), 0.1, dtype=F64))
    w = torch.as_tensor(node.consts[1], dtype=F64)
    out = rules().get("Linear").ibp(node, [box, w, torch.as_tensor(node.consts[2], dtype=F64)])
    radius = box.radius @ w.abs().T
    half = (out.upper - out.lower) / 2
    assert bool((half >= radius * (1 - 1e-12)).all() and (half <= radius * (1 + 1e-4)).all())


def test_cuda_never_takes_the_float32_path():
    """cuDNN may convolve by FFT or Winograd (and TF32 is on by default): the summation error
    bound does not cover those, so CUDA tensors keep the float64 arithmetic."""
    assert not float32_upper.full_float32(torch.device("cuda"))
