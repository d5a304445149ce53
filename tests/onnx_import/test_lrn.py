"""LRN (converters/composite.py): against onnxruntime, refusals by name, and bounds that hold
onnxruntime's running channel sum, whose rounding grows with every square it has seen."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.onnx_import.onnx_util import compare, one_node, ort_outputs
from tests.onnx_import.test_op_bounds import _bounds
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.loader import import_proto


@pytest.mark.parametrize("shape,attrs", [
    ((1, 6, 3, 4), dict(size=3)),
    ((1, 6, 3, 4), dict(size=5, alpha=0.5, beta=0.75, bias=2.0)),
    ((1, 4, 2, 2), dict(size=1, alpha=1.0, beta=0.5)),
    ((1, 3, 2, 2), dict(size=7, alpha=3.0, beta=1.5, bias=1.5)),  # a window past both ends
    ((1, 1, 5, 5), dict(size=3, alpha=2.0)),
])
def test_matches_onnxruntime(shape, attrs):
    compare(one_node("LRN", {"x": shape}, **attrs), n=16, low=-2.0, high=2.0)


@pytest.mark.parametrize("shape,attrs,words", [
    ((1, 4, 2, 2), dict(size=4), "size 4"),
    ((1, 4, 2, 2), dict(size=3, beta=0.0), "beta 0.0"),
    ((1, 4, 5), dict(size=3), "rank 3"),
])
def test_what_onnxruntime_does_not_run_is_refused_by_name(shape, attrs, words):
    proto = one_node("LRN", {"x": shape}, **attrs)
    data = proto.SerializeToString()
    with pytest.raises(UnsupportedOpError) as err:
        import_proto(onnx.load_model_from_string(data), data)
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_bounds_hold_the_running_sum_rounding(method):
    """A large first channel enters onnxruntime's running sum and leaves it again: what the
    later channels' sums lose to it puts their outputs off the exact values by ~1e-4
    relative (far beyond the window's own rounding, which the check below shows), and the
    bounds still hold them."""
    proto = one_node("LRN", {"x": (1, 16, 1, 1)}, size=3, alpha=1.0, beta=0.75, bias=1.0)
    data = proto.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    lo = np.full((1, 16, 1, 1), -0.01, np.float32)
    hi = -lo
    lo[0, 0], hi[0, 0] = 900.0, 1000.0
    lower, upper = _bounds(graph, lo, hi, method)
    rng = np.random.default_rng(3)
    share = np.float64(np.float32(1.0 / 3.0))
    off = 0.0
    for _ in range(64):
        x = rng.uniform(lo, hi).astype(np.float32)
        y = np.asarray(ort_outputs(proto, [{"x": x}])[0][0], np.float64).ravel()
        assert np.all(y >= lower) and np.all(y <= upper)
        v = x.astype(np.float64).ravel()
        window = np.array([(v[max(0, c - 1):c + 2] ** 2).sum() for c in range(16)])
        exact = v * (1.0 + share * window) ** -0.75
        off = max(off, float(np.max(np.abs(y - exact)[3:] / np.abs(exact[3:]))))
    assert off > 1e-5, off  # the runtime's deviation this test is about
