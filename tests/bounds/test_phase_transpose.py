"""Strided transposed convolutions as one stride-1 convolution over their phases and a pixel
shuffle (``linear._phase_transpose``): torch's conv_transpose2d values (exact in float64, within
the float32 adjoint's error bound in float32), taken by ``conv_transpose`` where the kernel's
sides are multiples of the strides onto few channels, and bound passes through such a Conv
enclose sampled outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bounds.engine.adjoint_precision as adjoint_precision
import bounds.rules.linear as linear
from bounds.types import Interval
from tests.bounds.test_fold_transpose import _net, assert_encloses_samples, both_sides_bounds

F64 = torch.float64


def _cases():
    """(channels in, out, spatial input, kernel, strides, pads, output padding): kernels
    multiples of the strides, square and not, padding up to kernel - 1, every output padding
    below the stride."""
    for (k0, s0), (k1, s1) in itertools.product(((2, 2), (4, 2), (6, 3), (3, 1)),
                                                ((4, 2), (2, 1), (6, 2))):
        if max(s0, s1) == 1:
            continue
        for p0, p1, o0, o1 in itertools.product(range(k0), range(k1), range(s0), range(s1)):
            if (p0 + p1 + o0 + o1) % 3 == 0:  # a third of them: enough, and quick
                yield 3, 2, (5, 4), (k0, k1), (s0, s1), (p0, p1), (o0, o1)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_phases_equal_torchs_transposed_convolution(dtype):
    g = torch.Generator().manual_seed(0)
    checked = 0
    for cin, cout, sp, kernel, strides, pads, extra in _cases():
        x = torch.randn((3, cout, *sp), generator=g, dtype=F64)
        x = x * 10 ** (3 * torch.rand(x.shape, generator=g, dtype=F64))  # magnitudes spread
        w = torch.randn((cout, cin, *kernel), generator=g, dtype=F64)
        common = {"stride": strides, "padding": pads, "output_padding": extra}
        exact = F.conv_transpose2d(x, w, **common)
        got = linear._phase_transpose(x.to(dtype), w.to(dtype), strides, pads,
                                      tuple(exact.shape[2:])).to(F64)
        assert got.shape == exact.shape
        if dtype == F64:
            assert torch.allclose(got, exact, rtol=1e-12, atol=1e-9)
        else:  # any summation order of k <= cout * prod(kernel) products: gamma(k + 3) |x||w|
            k = cout * int(np.prod(kernel))
            bound = adjoint_precision.gamma(k + 3) * F.conv_transpose2d(x.abs(), w.abs(),
                                                                        **common)
            assert bool(((exact - got).abs() <= bound).all())
        checked += 1
    assert checked > 100


@pytest.fixture
def phases(monkeypatch):
    """Counts the phase-form transposed convolutions taken."""
    taken = {"n": 0}
    real = linear._phase_transpose

    def counted(*args, **kwargs):
        taken["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(linear, "_phase_transpose", counted)
    return taken


def test_taken_onto_few_channels_where_the_strides_divide_the_kernel(phases):
    x = torch.randn((2, 6, 5, 5))
    common = {"stride": (2, 2), "dilation": (1, 1), "groups": 1, "padding": (1, 1)}
    linear.conv_transpose(x, torch.randn((6, 3, 4, 4)), **common)
    assert phases["n"] == 1
    for w, dtype, dil in ((torch.randn((6, 3, 3, 3)), torch.float32, (1, 1)),  # 3 % 2
                          (torch.randn((6, 3, 4, 4)), F64, (1, 1)),  # float64: torch's
                          (torch.randn((6, 3, 4, 4)), torch.float32, (2, 2)),  # dilated
                          (torch.randn((6, linear.FOLD_MAX_CHANNELS + 1, 4, 4)),
                           torch.float32, (1, 1))):
        linear.conv_transpose(x.to(dtype), w.to(dtype), **{**common, "dilation": dil})
    assert phases["n"] == 1


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_passes_through_the_phases_enclose_sampled_outputs(method, phases, monkeypatch):
    """Float32 adjoints everywhere: the first Conv's adjoint takes the phase form; the bounds
    enclose sampled outputs and equal the col2im form's up to float32 reordering (both carry
    the same allowance)."""
    monkeypatch.setattr(adjoint_precision, "MIN_ELEMENTS", 0)
    graph = _net(kernel=4)
    g = torch.Generator().manual_seed(4)
    centre = torch.rand((2, 3, 12, 12), generator=g, dtype=F64)
    box = Interval(centre - 0.05, centre + 0.05)
    low = both_sides_bounds(graph, box, method)
    assert phases["n"] > 0
    monkeypatch.setattr(linear, "_phases_fit", lambda *args: False)
    folded = both_sides_bounds(graph, box, method)
    slack = 1e-5 if method == "crown" else 1e-4
    assert torch.allclose(low, folded, rtol=slack, atol=slack)
    assert_encloses_samples(graph, box, low)
