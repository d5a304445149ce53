"""Strided float32 transposed convolutions onto few channels as a matrix product and a col2im
(``linear.conv_transpose``, ``F.fold``): the same values as torch's conv_transpose2d up to the
float32 adjoint's error bound, taken by the Conv adjoint of dense and window coefficients, and
passes through such a Conv enclose sampled outputs with the bounds of the direct kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bounds.engine.adjoint_precision as adjoint_precision
import bounds.rules.linear as linear
from bounds.engine import patches
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval
from tests.bounds.test_conv_patches import _forward_all

F64 = torch.float64

# (channels in, out, spatial input, kernel, strides, dilations, pads, output padding)
CASES = [
    (3, 16, (16, 16), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    (2, 5, (7, 9), (3, 2), (2, 1), (2, 1), (0, 1), (1, 0)),
    (4, 8, (5, 6), (4, 4), (3, 2), (1, 1), (2, 0), (2, 1)),
    (1, 3, (6, 6), (1, 1), (2, 2), (1, 1), (0, 0), (0, 0)),
]


@pytest.fixture
def folds(monkeypatch):
    """Counts the col2im transposed convolutions taken."""
    taken = {"n": 0}
    real = F.fold

    def counted(*args, **kwargs):
        taken["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(linear.F, "fold", counted)
    return taken


@pytest.mark.parametrize("case", CASES)
def test_fold_equals_the_direct_kernel_within_the_error_bound(case, folds):
    cin, cout, sp, kernel, strides, dils, pads, extra = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn((7, cout, *sp), generator=g, dtype=F64)
    x = x * 10 ** (4 * torch.rand(x.shape, generator=g, dtype=F64))  # magnitudes spread
    w = torch.randn((cout, cin, *kernel), generator=g, dtype=F64)
    common = {"stride": strides, "dilation": dils, "groups": 1, "padding": pads,
              "output_padding": extra}
    exact = F.conv_transpose2d(x, w, **common)
    low = linear.conv_transpose(x.float(), w.float(), **common).to(F64)
    # (a 1 x 1 kernel without padding: linear._pointwise_transpose instead)
    assert folds["n"] == (max(strides) > 1 and not (kernel == (1, 1) and pads == (0, 0)))
    assert low.shape == exact.shape
    # any summation order of k <= cout * prod(kernel) products: gamma(k + 3) |x| |w|
    k = cout * int(np.prod(kernel))
    bound = adjoint_precision.gamma(k + 3) * F.conv_transpose2d(x.abs(), w.abs(), **common)
    assert bool(((exact - low).abs() <= bound).all())
    assert bool(((exact - low).abs() > 0).any())


def test_fold_not_taken_beyond_its_channels_or_in_float64(folds):
    x = torch.randn((2, 6, 5, 5))
    for w, dtype in ((torch.randn((6, linear.FOLD_MAX_CHANNELS + 1, 3, 3)), torch.float32),
                     (torch.randn((6, 3, 3, 3)), F64)):
        linear.conv_transpose(x.to(dtype), w.to(dtype), stride=(2, 2), dilation=(1, 1),
                              groups=1)
    assert folds["n"] == 0


def _net(seed=0, kernel=3) -> Graph:
    """Conv 3 -> 8 channels at stride 2 (kernel 3: the fold's case; 4: the phase form's, as
    oval21's first Conv), Relu, Conv, Relu, Linear."""
    rng = np.random.default_rng(seed)
    attrs = {"strides": (2, 2), "dilations": (1, 1), "pads": (1, 1, 1, 1), "group": 1}
    k = kernel
    nodes = [
        Node("c0", "Conv", ("x", None, None), (1, 8, 6, 6), attrs,
             {1: (rng.standard_normal((8, 3, k, k)) / k).astype(np.float32),
              2: (rng.standard_normal(8) * 0.1).astype(np.float32)}),
        Node("r0", "Relu", ("c0",), (1, 8, 6, 6)),
        Node("c1", "Conv", ("r0", None, None), (1, 4, 3, 3), attrs,
             {1: (rng.standard_normal((4, 8, k, k)) / k).astype(np.float32),
              2: (rng.standard_normal(4) * 0.1).astype(np.float32)}),
        Node("r1", "Relu", ("c1",), (1, 4, 3, 3)),
        Node("flat", "Reshape", ("r1",), (1, 36), {"shape": (1, 36)}),
        Node("out", "Linear", ("flat", None, None), (1, 5), {},
             {1: rng.standard_normal((5, 36)).astype(np.float32),
              2: rng.standard_normal(5).astype(np.float32)}),
    ]
    return Graph((TensorInfo("x", (1, 3, 12, 12)),), (TensorInfo("out", (1, 5)),),
                 tuple(nodes))


def both_sides_bounds(graph, box, method):
    """Lower bounds of y and -y for a net with 5 outputs (CROWN intermediates)."""
    coef = torch.cat([torch.eye(5, dtype=F64), -torch.eye(5, dtype=F64)]).unsqueeze(0)
    coef = coef.expand(box.lower.shape[0], -1, -1)
    rhs = torch.zeros(coef.shape[:2], dtype=F64)
    return bound_spec(graph, box, coef, rhs, BoundOptions(method=method,
                                                          intermediate="crown")).lower


def assert_encloses_samples(graph, box, low, samples: int = 50):
    """``low`` (from both_sides_bounds) lies below y and -y at points sampled in ``box``."""
    for _ in range(samples):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)["out"].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low).all())


@pytest.mark.parametrize("method,share", [("crown", None), ("crown", 100.0), ("alpha", None)])
def test_passes_through_the_fold_enclose_sampled_outputs(method, share, folds, monkeypatch):
    """Float32 adjoints everywhere (dense, and windows kept however large): the first Conv's
    adjoint takes the fold; the bounds enclose sampled outputs and equal the direct kernel's
    up to float32 reordering (both carry the same allowance)."""
    monkeypatch.setattr(adjoint_precision, "MIN_ELEMENTS", 0)
    if share is not None:
        monkeypatch.setattr(patches, "DENSE_SHARE", share)
    graph = _net()
    g = torch.Generator().manual_seed(3)
    centre = torch.rand((2, 3, 12, 12), generator=g, dtype=F64)
    box = Interval(centre - 0.05, centre + 0.05)
    low = both_sides_bounds(graph, box, method)
    assert folds["n"] > 0
    monkeypatch.setattr(linear, "FOLD_MAX_CHANNELS", 0)
    direct = both_sides_bounds(graph, box, method)
    slack = 1e-5 if method == "crown" else 1e-4  # (float32 sums reordered)
    assert torch.allclose(low, direct, rtol=slack, atol=slack)
    assert_encloses_samples(graph, box, low)


@pytest.mark.parametrize("case", [(8, 16, (8, 8), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
                                  (32, 16, (5, 7), (1, 1), (2, 2), (1, 1), (0, 0), (1, 0)),
                                  (6, 4, (6, 6), (3, 3), (2, 1), (1, 2), (0, 1), (1, 0))])
def test_channels_last_kernel_within_the_error_bound(case, folds):
    """Strided float32 transposed convolutions onto more channels take the channels-last
    kernel: contiguous output, within the same bound of the float64 kernel."""
    cin, cout, sp, kernel, strides, dils, pads, extra = case
    g = torch.Generator().manual_seed(1)
    x = torch.randn((5, cout, *sp), generator=g, dtype=F64)
    w = torch.randn((cout, cin, *kernel), generator=g, dtype=F64)
    common = {"stride": strides, "dilation": dils, "groups": 1, "padding": pads,
              "output_padding": extra}
    exact = F.conv_transpose2d(x, w, **common)
    low = linear.conv_transpose(x.float(), w.float(), **common)
    assert folds["n"] == 0 and low.is_contiguous() and low.shape == exact.shape
    k = cout * int(np.prod(kernel))
    bound = adjoint_precision.gamma(k + 3) * F.conv_transpose2d(x.abs(), w.abs(), **common)
    assert bool(((exact - low.to(F64)).abs() <= bound).all())
