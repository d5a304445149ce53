"""The engines' bounds of every listed op's model enclose what onnxruntime computes (float32,
its own kernels) at points sampled in the box: IBP and CROWN, on boxes around random centres.

This checks each converter and the rules of the IR ops it emits together, including the
compositions of ``converters/composite.py`` and the float32 allowances of every piece."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from bounds.engine.deadline import engine_deadline
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.onnx_import.onnx_util import ort_outputs
from tests.onnx_import.op_models import OP_MODELS, VARIANT_MODELS
from verifier.onnx_import.loader import import_proto

SAMPLES = 48
# Box half-width as a share of the op model's input range; two boxes per op.
SHARES = (0.04, 0.15)
# The normalisations' variance, mean(x^2) - mean^2 as the runtime computes it, keeps a
# positive lower bound (which 1 / sqrt needs) only on narrow boxes.
NARROW = {"LayerNormalization": (0.01, 0.03), "InstanceNormalization": (0.01, 0.03),
          "MeanVarianceNormalization": (0.002, 0.006)}  # (no epsilon: narrower still)


def _box(shape, low: float, high: float, share: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """float32 ends of a box of half-width ``share`` (high - low) inside [low, high]."""
    half = share * (high - low)
    centre = rng.uniform(low + half, high - half, shape)
    return ((centre - half).astype(np.float32), (centre + half).astype(np.float32))


def _points(lo: np.ndarray, hi: np.ndarray, rng) -> np.ndarray:
    """Uniform points, a quarter of them at vertices (where relaxations are loosest)."""
    u = rng.uniform(0.0, 1.0, (SAMPLES, *lo.shape))
    u[: SAMPLES // 4] = np.round(u[: SAMPLES // 4])
    return np.clip((lo + u * (hi - lo)).astype(np.float32), lo, hi)


def _bounds(graph, lo: np.ndarray, hi: np.ndarray, method: str) -> tuple[np.ndarray, ...]:
    n_out = math.prod(graph.outputs[0].shape)
    eye = torch.eye(n_out, dtype=torch.float64)
    coef = torch.cat([eye, -eye]).unsqueeze(0)
    box = Interval(torch.from_numpy(lo.astype(np.float64)).reshape(1, *graph.inputs[0].shape),
                   torch.from_numpy(hi.astype(np.float64)).reshape(1, *graph.inputs[0].shape))
    with engine_deadline(None):
        lower = bound_spec(graph, box, coef, torch.zeros(1, 2 * n_out, dtype=torch.float64),
                           BoundOptions(method=method)).lower[0].numpy()
    return lower[:n_out], -lower[n_out:]


MODELS = {**OP_MODELS, **VARIANT_MODELS}


@pytest.mark.parametrize("method", ["ibp", "crown"])
@pytest.mark.parametrize("op", sorted(MODELS))
def test_bounds_enclose_onnxruntime(op, method):
    build, low, high = MODELS[op]
    proto = build()
    data = proto.SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    graph = model.graph
    rng = np.random.default_rng(sum(map(ord, op)))
    for share in NARROW.get(op, SHARES):
        lo, hi = _box(model.onnx_input_shapes[0], low, high, share, rng)
        lower, upper = _bounds(graph, lo, hi, method)
        points = _points(lo, hi, rng)
        outs = ort_outputs(proto, [{model.input_names[0]: p} for p in points])
        y = np.stack([o[0].astype(np.float64).reshape(-1) for o in outs])
        assert np.all(y >= lower) and np.all(y <= upper), (
            f"{op} {method} share {share}: worst excess below "
            f"{float(np.max(lower - y)):.3g}, above {float(np.max(y - upper)):.3g}")


@pytest.mark.parametrize("op", ["LayerNormalization", "InstanceNormalization"])
@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (8.0, 1.0), (30.0, 0.3), (1000.0, 0.01)])
def test_normalisation_bounds_cover_runtime_cancellation(op, offset, spread):
    """onnxruntime's float32 kernels take the variance as mean(x^2) - mean^2 (measured: 2e-3
    off exact arithmetic at offset 1000, spread 0.01, 768 features): on inputs far from zero
    the bounds must hold those errors, or not exist (DomainError: the variance's allowance
    reaches zero), never miss them."""
    from bounds.rules.tangents import DomainError
    from tests.onnx_import.onnx_util import one_node

    n = 64
    shape = (1, n) if op == "LayerNormalization" else (1, 1, n)
    width = n if op == "LayerNormalization" else 1
    rng = np.random.default_rng(5)
    proto = one_node(op, {"x": shape}, {"s": rng.uniform(0.5, 2, width).astype(np.float32),
                                        "b": rng.uniform(-1, 1, width).astype(np.float32)},
                     opset=17)
    data = proto.SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    centre = offset + spread * rng.standard_normal(shape)
    half = 1e-3 * spread
    lo, hi = (centre - half).astype(np.float32), (centre + half).astype(np.float32)
    try:
        lower, upper = _bounds(model.graph, lo, hi, "crown")
    except DomainError:
        assert offset > 0, "no bound on inputs centred at zero"
        return
    points = _points(lo, hi, rng)
    y = np.stack([o[0].astype(np.float64).reshape(-1) for o in ort_outputs(
        proto, [{model.input_names[0]: p} for p in points])])
    assert np.all(y >= lower) and np.all(y <= upper)


def _picked_mean_batch_norm():
    """BatchNormalization of x [1, 2, 64] whose mean is x's first feature per channel (a
    Slice: exact, no allowance of its own), variance 1e-4 and epsilon 1e-5: ns ~ 95, and the
    runtime's fused products x ns and mean ns cancel alone."""
    from tests.onnx_import.op_models import _i, _n, make_model

    inits = {"s": _i(0, 0, 0), "e": _i(1, 2, 1), "c": _i(2), "var": np.full(2, 1e-4, np.float32),
             "ones": np.ones(2, np.float32), "b": np.array([0.5, -0.25], np.float32)}
    nodes = [_n("Slice", ["x", "s", "e"], "first"), _n("Reshape", ["first", "c"], "mean"),
             _n("BatchNormalization", ["x", "ones", "b", "mean", "var"], "y", epsilon=1e-5)]
    return make_model(nodes, {"x": (1, 2, 64)}, ["y"], inits)


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (30.0, 0.3), (1000.0, 0.01)])
@pytest.mark.parametrize("method", ["ibp", "crown"])
@pytest.mark.parametrize("form", ["reduced", "picked"])
def test_statistics_batch_norm_bounds_cover_the_fused_rounding(offset, spread, method, form):
    """A BatchNormalization fed statistics of its own input (tf2onnx's LayerNormalization:
    "reduced"; a mean picked from the input: "picked"), which onnxruntime runs fused,
    x ns + (bias - mean ns): on inputs far from zero the two products nearly cancel (at
    offset 1000 each is ~3e4 to ~1e5 for outputs ~1). The bounds of the centred form must
    hold those errors (the importer's two Slack nodes: without them "picked" fails)."""
    from tests.onnx_import.op_models import statistics_batch_norm

    proto = (statistics_batch_norm(features=64, groups=2) if form == "reduced"
             else _picked_mean_batch_norm())
    data = proto.SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    rng = np.random.default_rng(9)
    centre = offset + spread * rng.standard_normal((1, 2, 64))
    half = 1e-3 * spread
    lo, hi = (centre - half).astype(np.float32), (centre + half).astype(np.float32)
    lower, upper = _bounds(model.graph, lo, hi, method)
    points = _points(lo, hi, rng)
    y = np.stack([o[0].astype(np.float64).reshape(-1) for o in ort_outputs(
        proto, [{model.input_names[0]: p} for p in points])])
    assert np.all(y >= lower) and np.all(y <= upper), (
        float(np.max(lower - y)), float(np.max(y - upper)))


def test_no_finite_bound_is_not_an_internal_error():
    """A variance interval reaching zero stops the bounds with the op named; the run attacks
    for its time and reports no internal error (that stat counts bugs in campaigns)."""
    from tests.onnx_import.onnx_util import one_node
    from verifier.config import VerifyConfig
    from verifier.pipeline import verify
    from verifier.spec.types import InputRegion, OutputCondition, Spec

    # (more inputs than input splitting takes: no search narrows the box; no epsilon, so
    # equal inputs give a variance of 0 and 1 / sqrt has no finite bound)
    data = one_node("LayerNormalization", {"x": (1, 4, 8)}, {"s": np.ones(8, np.float32)},
                    opset=17, epsilon=0.0).SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    coef = np.zeros((1, 1, 32))
    coef[0, 0, 0] = 1.0
    region = InputRegion(np.full(32, -1.0), np.full(32, 1.0),
                         OutputCondition(coef, np.array([[-1e3]])))
    result = verify(model, Spec((region,), 32, 32), VerifyConfig(timeout=3.0))
    assert result.verdict == "unknown", result
    assert "bounds stopped" in result.message and "Reciprocal" in result.message, result
    assert "internal_error" not in result.stats, result


@pytest.mark.parametrize("name", sorted(VARIANT_MODELS))
def test_variant_matches_onnxruntime(name):
    from tests.onnx_import.onnx_util import compare

    build, low, high = VARIANT_MODELS[name]
    compare(build(), n=8, low=low, high=high)


@pytest.mark.parametrize("op,opset", [("LayerNormalization", 17),
                                      ("InstanceNormalization", 6)])
@pytest.mark.parametrize("radius", [0.05, 0.2])
def test_normalisation_bounds_exist_where_the_variance_stays_positive(op, opset, radius):
    """Features spread over [1, 3] moving by +-radius: the exact variance stays well above 0,
    the centred form's lower end says so (mean(x^2) - mean^2 alone fell below 0: no bound,
    a DomainError at the Reciprocal), and the bounds enclose onnxruntime's values."""
    from tests.onnx_import.onnx_util import one_node

    n = 16
    shape = (1, n) if op == "LayerNormalization" else (1, 1, n)
    rng = np.random.default_rng(11)
    width = n if op == "LayerNormalization" else 1
    proto = one_node(op, {"x": shape}, {"s": rng.uniform(0.5, 2, width).astype(np.float32),
                                        "b": rng.uniform(-1, 1, width).astype(np.float32)},
                     opset=opset)
    data = proto.SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    centre = np.linspace(1.0, 3.0, n).reshape(shape)
    lo, hi = (centre - radius).astype(np.float32), (centre + radius).astype(np.float32)
    for method in ("ibp", "crown"):
        lower, upper = _bounds(model.graph, lo, hi, method)
        assert np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))
        points = _points(lo, hi, rng)
        y = np.stack([o[0].astype(np.float64).reshape(-1) for o in ort_outputs(
            proto, [{model.input_names[0]: p} for p in points])])
        assert np.all(y >= lower) and np.all(y <= upper)
