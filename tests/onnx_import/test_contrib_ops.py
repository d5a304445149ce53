"""Models saved by onnxruntime's graph optimizer (``converters/contrib.py``): its fused
contrib ops import and agree with onnxruntime; its machine-specific layout domain is refused
with the way out named."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.onnx_import.onnx_util import compare, make_model, rand
from verifier.errors import ModelError
from verifier.onnx_import.loader import import_proto


def _cnn() -> onnx.ModelProto:
    """Conv-Relu, Conv-Sigmoid, MatMul-Add-Relu, MatMul-Add: what the optimizer fuses."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2]), n("Sigmoid", ["c2"], ["s2"]),
             n("Flatten", ["s2"], ["f"]), n("MatMul", ["f", "w3"], ["m3"]),
             n("Add", ["m3", "b3"], ["a3"]), n("Relu", ["a3"], ["r3"]),
             n("MatMul", ["r3", "w4"], ["m4"]), n("Add", ["m4", "b4"], ["y"])]
    inits = {"w1": rand(4, 2, 3, 3), "b1": rand(4, seed=2), "w2": rand(3, 4, 3, 3, seed=3),
             "b2": rand(3, seed=4), "w3": rand(12, 5, seed=5), "b3": rand(5, seed=6),
             "w4": rand(5, 2, seed=7), "b4": rand(2, seed=8)}
    return make_model(nodes, {"x": (1, 2, 5, 5)}, ["y"], inits)


def _optimized(model: onnx.ModelProto, tmp_path, level) -> onnx.ModelProto:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def test_a_model_saved_by_the_extended_optimizer_imports_and_agrees(tmp_path):
    import onnxruntime as ort

    saved = _optimized(_cnn(), tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    fused = collections.Counter(n.op_type for n in saved.graph.node
                                if n.domain == "com.microsoft")
    assert fused["FusedConv"] >= 1, fused  # (the optimizer wrote contrib ops)
    compare(saved, n=8, low=-1.0, high=1.0)


def test_the_blocked_layout_domain_is_refused_with_the_way_out():
    node = helper.make_node("ReorderInput", ["x"], ["y"], domain="com.microsoft.nchwc")
    model = make_model([node], {"x": (1, 8, 2, 2)}, ["y"])
    model.opset_import.append(helper.make_opsetid("com.microsoft.nchwc", 1))
    with pytest.raises(ModelError, match="com.microsoft.nchwc.*ORT_ENABLE_EXTENDED"):
        import_proto(model, model.SerializeToString())


def test_fused_gemm_without_its_activation_alpha_is_a_model_error():
    from tests.onnx_import.op_models import contrib_model

    model = contrib_model("FusedGemm", {"x": (1, 4)}, {"w": rand(4, 3)}, activation="LeakyRelu")
    with pytest.raises(ModelError, match="FusedGemm.*activation_alpha"):
        import_proto(model, model.SerializeToString())


def test_an_unknown_fused_activation_is_refused_by_name():
    from bounds.registry import UnsupportedOpError
    from tests.onnx_import.op_models import contrib_model

    model = contrib_model("FusedConv", {"x": (1, 2, 3, 3)}, {"w": rand(1, 2, 1, 1)},
                          activation="Softplus")
    with pytest.raises(UnsupportedOpError, match="fused activation 'Softplus'"):
        import_proto(model, model.SerializeToString())


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (30.0, 0.3), (1000.0, 0.01)])
def test_skip_layer_normalization_bounds_cover_the_runtime_on_offset_inputs(offset, spread):
    """onnxruntime's SkipLayerNormalization kernel takes its own variance of input + skip +
    bias; on inputs far from zero (offset 1000, spread 0.01) its rounding must stay inside
    the bounds (or the bounds must not exist: DomainError), as for LayerNormalization."""
    import torch

    from bounds.engine.deadline import engine_deadline
    from bounds.engine.spec_bounds import BoundOptions, bound_spec
    from bounds.rules.tangents import DomainError
    from bounds.types import Interval
    from tests.onnx_import.onnx_util import ort_outputs
    from tests.onnx_import.op_models import contrib_model

    n = 64
    rng = np.random.default_rng(11)
    model = contrib_model("SkipLayerNormalization", {"x": (1, 2, n)},
                          {"skip": (0.1 * rng.standard_normal((1, 2, n))).astype(np.float32),
                           "g": rng.uniform(0.5, 1.5, n).astype(np.float32),
                           "beta": rng.uniform(-1, 1, n).astype(np.float32)}, epsilon=1e-5)
    imported = import_proto(model, model.SerializeToString())
    centre = offset + spread * rng.standard_normal((1, 2, n))
    half = 1e-3 * spread
    lo, hi = (centre - half).astype(np.float32), (centre + half).astype(np.float32)
    eye = torch.eye(2 * n, dtype=torch.float64)
    coef = torch.cat([eye, -eye]).unsqueeze(0)
    box = Interval(torch.from_numpy(lo.astype(np.float64)),
                   torch.from_numpy(hi.astype(np.float64)))
    try:
        with engine_deadline(None):
            lower = bound_spec(imported.graph, box, coef,
                               torch.zeros(1, 4 * n, dtype=torch.float64),
                               BoundOptions(method="crown")).lower[0].numpy()
    except DomainError:
        assert offset > 0, "no bound on inputs centred at zero"
        return
    points = [np.clip(lo + rng.uniform(0, 1, lo.shape).astype(np.float32) * (hi - lo), lo, hi)
              for _ in range(32)]
    ys = np.stack([o[0].astype(np.float64).reshape(-1)
                   for o in ort_outputs(model, [{"x": p} for p in points])])
    assert np.all(ys >= lower[:2 * n]) and np.all(ys <= -lower[2 * n:])
