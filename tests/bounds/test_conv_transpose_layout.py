"""Strided float32 Conv adjoints without layout round trips (``linear.conv_transpose``):
a 1 x 1 kernel as one matrix product written at every stride-th cell, and coefficients cast
straight into the channels-last layout that torch's strided kernel takes
(``adjoint_precision.work_cast``), the kernel's output kept in it until the cast back. Both
stay within the float32 adjoint's error bound of the float64 kernel, the layouts give the
same numbers, and passes through such Convs enclose sampled outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bounds.engine.adjoint_precision as adjoint_precision
import bounds.rules.linear as linear
from bounds.engine import patches
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval
from tests.bounds.test_fold_transpose import assert_encloses_samples, both_sides_bounds

F64 = torch.float64


@pytest.fixture
def pointwise(monkeypatch):
    """Counts the 1 x 1 transposed convolutions taken as a matrix product."""
    taken = {"n": 0}
    real = linear._pointwise_transpose

    def counted(*args, **kwargs):
        taken["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(linear, "_pointwise_transpose", counted)
    return taken


# (channels in, out, spatial input, strides, output padding)
POINTWISE = [(16, 32, (8, 8), (2, 2), (1, 1)), (3, 5, (5, 7), (3, 2), (2, 0)),
             (4, 6, (4, 4), (2, 2), (0, 0)), (2, 9, (6, 5), (1, 2), (0, 1))]


@pytest.mark.parametrize("case", POINTWISE)
def test_pointwise_within_the_error_bound(case, pointwise):
    cin, cout, sp, strides, extra = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn((6, cout, *sp), generator=g, dtype=F64)
    x = x * 10 ** (4 * torch.rand(x.shape, generator=g, dtype=F64))  # magnitudes spread
    w = torch.randn((cout, cin, 1, 1), generator=g, dtype=F64)
    common = {"stride": strides, "dilation": (1, 1), "groups": 1, "padding": (0, 0),
              "output_padding": extra}
    exact = F.conv_transpose2d(x, w, **common)
    low = linear.conv_transpose(x.float(), w.float(), **common)
    assert pointwise["n"] == 1 and low.is_contiguous() and low.shape == exact.shape
    # any summation order of k = cout products: gamma(k + 3) |x| |w|
    bound = adjoint_precision.gamma(cout + 3) * F.conv_transpose2d(x.abs(), w.abs(), **common)
    diff = (exact - low.to(F64)).abs()
    assert bool((diff <= bound).all())
    assert bool((low.to(F64)[exact == 0] == 0).all())  # cells between strides: exact zeros


def test_pointwise_not_taken_padded_in_float64_or_beyond_the_stride(pointwise):
    x = torch.randn((2, 6, 5, 5))
    w = torch.randn((6, 3, 1, 1))
    plain = {"stride": (2, 2), "dilation": (1, 1), "groups": 1}
    linear.conv_transpose(x, w, padding=(1, 1), **plain)
    linear.conv_transpose(x.double(), w.double(), **plain)
    linear.conv_transpose(x, torch.randn((6, 8, 1, 1)), stride=(2, 2), dilation=(3, 3),
                          groups=1, output_padding=(2, 2))  # (output padding >= stride: torch's)
    assert pointwise["n"] == 0


@pytest.mark.parametrize("case", [(16, 32, (8, 8), (3, 3), (2, 2), (1, 1), (1, 1)),
                                  (8, 6, (5, 7), (3, 2), (2, 1), (0, 1), (1, 0))])
def test_channels_last_input_gives_the_same_numbers(case):
    """Coefficients cast into channels-last layout: the kernel's output stays channels-last,
    with the same values as from contiguous coefficients (the same kernel)."""
    cin, cout, sp, kernel, strides, pads, extra = case
    g = torch.Generator().manual_seed(2)
    x = torch.randn((2, 5, cout, *sp), generator=g, dtype=F64)
    w = torch.randn((cout, cin, *kernel), generator=g, dtype=torch.float32)
    assert linear.channels_last_kernel(w, strides, 1, torch.float32)
    node = Node("c", "Conv", ("x", None), (1, cout, *sp),
                {"strides": strides, "dilations": (1, 1), "group": 1, "pads": pads * 2},
                {1: w.numpy()})
    cast = adjoint_precision.work_cast(node, x, torch.float32)
    assert cast.shape == x.shape and torch.equal(cast, x.float())
    flat = cast.reshape(-1, *cast.shape[2:])
    assert not flat.is_contiguous()
    assert flat.is_contiguous(memory_format=torch.channels_last)
    common = {"stride": strides, "dilation": (1, 1), "groups": 1, "padding": pads,
              "output_padding": extra}
    kept = linear.conv_transpose(flat, w, **common)
    plain = linear.conv_transpose(x.float().reshape(flat.shape), w, **common)
    assert plain.is_contiguous() and kept.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(kept, plain)
    # a 1 x 1 kernel or few output channels: no channels-last cast
    for shape in ((cout, cin, 1, 1), (cout, linear.FOLD_MAX_CHANNELS, 3, 3)):
        other = Node("c", "Conv", ("x", None), (1, cout, *sp), node.attrs,
                     {1: np.zeros(shape, dtype=np.float32)})
        assert adjoint_precision.work_cast(other, x, torch.float32).is_contiguous()


def _net(seed=0) -> Graph:
    """A residual block at stride 2 with a 1 x 1 shortcut: Conv 3 -> 8 (stride 2), Relu,
    Conv 8 -> 12 (stride 2) and Conv 1 x 1 8 -> 12 (stride 2), Add, Relu, Linear."""
    rng = np.random.default_rng(seed)
    s2 = {"strides": (2, 2), "dilations": (1, 1), "pads": (1, 1, 1, 1), "group": 1}
    s2p = {"strides": (2, 2), "dilations": (1, 1), "pads": (0, 0, 0, 0), "group": 1}

    def conv(name, src, cout, cin, k, attrs, shape):
        return Node(name, "Conv", (src, None, None), shape, attrs,
                    {1: (rng.standard_normal((cout, cin, k, k)) / k).astype(np.float32),
                     2: (rng.standard_normal(cout) * 0.1).astype(np.float32)})

    nodes = [
        conv("c0", "x", 8, 3, 3, s2, (1, 8, 8, 8)),
        Node("r0", "Relu", ("c0",), (1, 8, 8, 8)),
        conv("c1", "r0", 12, 8, 3, s2, (1, 12, 4, 4)),
        conv("c2", "r0", 12, 8, 1, s2p, (1, 12, 4, 4)),
        Node("s", "Add", ("c1", "c2"), (1, 12, 4, 4)),
        Node("r1", "Relu", ("s",), (1, 12, 4, 4)),
        Node("flat", "Reshape", ("r1",), (1, 192), {"shape": (1, 192)}),
        Node("out", "Linear", ("flat", None, None), (1, 5), {},
             {1: (rng.standard_normal((5, 192)) / 8).astype(np.float32),
              2: rng.standard_normal(5).astype(np.float32)}),
    ]
    return Graph((TensorInfo("x", (1, 3, 16, 16)),), (TensorInfo("out", (1, 5)),),
                 tuple(nodes))


@pytest.mark.parametrize("method,share", [("crown", None), ("crown", 100.0), ("alpha", None)])
def test_passes_enclose_sampled_outputs(method, share, pointwise, monkeypatch):
    """Float32 adjoints everywhere (dense, and windows kept however large): the shortcut's
    adjoint takes the matrix product, the strided 3 x 3 one the channels-last cast; the bounds
    enclose sampled outputs and match float64 adjoints' up to the allowance."""
    monkeypatch.setattr(adjoint_precision, "MIN_ELEMENTS", 0)
    if share is not None:
        monkeypatch.setattr(patches, "DENSE_SHARE", share)
    casts = {"n": 0}
    real = adjoint_precision.work_cast

    def counted(node, coef, work):
        out = real(node, coef, work)
        casts["n"] += not out.reshape(-1, *out.shape[-3:]).is_contiguous()
        return out

    monkeypatch.setattr(adjoint_precision, "work_cast", counted)
    graph = _net()
    g = torch.Generator().manual_seed(3)
    centre = torch.rand((2, 3, 16, 16), generator=g, dtype=F64)
    box = Interval(centre - 0.03, centre + 0.03)
    low = both_sides_bounds(graph, box, method)
    assert pointwise["n"] > 0 and casts["n"] > 0
    monkeypatch.setattr(adjoint_precision, "ENABLED", False)
    exact = both_sides_bounds(graph, box, method)
    slack = 1e-4 if method == "crown" else 1e-3
    assert torch.allclose(low, exact, rtol=slack, atol=slack)
    assert_encloses_samples(graph, box, low)
