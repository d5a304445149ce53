"""Counterexample validation: zero tolerance on the box, onnxruntime on the output."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import abs_net, gap_spec, make_spec
from onnx import helper

from tests.onnx_import.onnx_util import make_model, rand
from verifier.onnx_import.loader import import_proto
from verifier.validate import (
    VNNCOMP_BOX_TOL,
    box_tolerance,
    float32_box,
    run_onnx,
    run_onnx_batch,
    validate_batch,
    validate_counterexample,
)


def test_accepts_true_violation(net):
    spec = gap_spec(1.5)
    cex = validate_counterexample(net, spec, np.array([-0.9, -0.5]))
    assert cex is not None
    assert cex.region == 0
    np.testing.assert_allclose(cex.y, [1.8, 0.0], rtol=1e-6)
    assert spec.violated_by(cex.x, cex.y)


def test_rejects_point_outside_box(net):
    spec = gap_spec(1.5)
    assert validate_counterexample(net, spec, np.array([-1.2, -0.5])) is None
    assert validate_counterexample(net, spec, np.array([-0.9, -1.0001])) is None


def test_rejects_point_whose_output_is_safe(net):
    spec = gap_spec(1.5)
    assert validate_counterexample(net, spec, np.array([0.1, 0.0])) is None
    assert validate_counterexample(net, spec, np.array([np.nan, 0.0])) is None


def test_rejects_when_ir_and_ort_disagree_on_the_margin(net):
    # 2 * 0.75 = 1.5 exactly: holds (<=); a hair less does not.
    spec = gap_spec(1.5)
    assert validate_counterexample(net, spec, np.array([0.75, 0.0])) is not None
    below = np.nextafter(np.float32(0.75), np.float32(0))
    assert validate_counterexample(net, spec, np.array([below, 0.0])) is None


def test_float32_box_stays_inside():
    lower = np.array([0.7, 0.1, -0.3, 1e-40])
    upper = np.array([0.9, 0.2, 0.3, 1.0])
    lo, hi = float32_box(lower, upper)
    assert lo.dtype == np.float32
    assert np.all(lo.astype(np.float64) >= lower)
    assert np.all(hi.astype(np.float64) <= upper)
    assert lo[0] > np.float32(0.7)  # float32(0.7) lies below 0.7
    lo, hi = float32_box(np.array([0.1]), np.array([0.1 + 1e-12]))
    assert lo[0] > hi[0]  # no float32 in this box


def test_snaps_bound_rounding_into_box(net):
    # Lower bound 0.7 rounds *down* in float32; the violation sits right at the bound.
    spec = make_spec([0.7, -1.0], [1.0, 0.0], [[[1.0, 0.0]]], [[1.40000016]])
    cex = validate_counterexample(net, spec, np.array([0.7, -0.5]))
    assert cex is not None
    assert cex.x[0] >= 0.7
    assert spec.regions[0].contains(cex.x)
    assert np.float32(cex.x[0]) == cex.x[0]


def test_box_without_float32_point_uses_nearest_float32(net):
    # [0.1, 0.1 + 1e-12] holds no float32: the nearest float32 is accepted (VNN-COMP checker's
    # tolerance) and the distance it needed is reported; strict mode refuses it.
    spec = make_spec([0.1, 0.0], [0.1 + 1e-12, 0.0], [[[-1.0, 0.0]]], [[0.0]])
    cex = validate_counterexample(net, spec, np.array([0.1, 0.0]))
    assert cex is not None
    assert cex.x[0] == float(np.float32(0.1))
    assert cex.box_distance == float(np.float32(0.1)) - (0.1 + 1e-12)  # above the upper bound
    assert 0 < cex.box_distance <= VNNCOMP_BOX_TOL
    with box_tolerance(0.0):
        assert validate_counterexample(net, spec, np.array([0.1, 0.0])) is None


def test_point_inside_box_reports_zero_distance(net):
    cex = validate_counterexample(net, gap_spec(1.5), np.array([-0.9, -0.5]))
    assert cex is not None and cex.box_distance == 0.0
    with box_tolerance(0.0):
        cex = validate_counterexample(net, gap_spec(1.5), np.array([-0.9, -0.5]))
    assert cex is not None and cex.box_distance == 0.0


def test_batch_fixed_and_symbolic_batch():
    spec = gap_spec(1.5)
    xs = np.array([[0.1, 0.0], [0.2, 0.5], [-0.95, -0.2], [0.99, 0.0]])
    for model in (abs_net(1), abs_net("N")):
        ys = run_onnx_batch(model, xs)
        assert ys.shape == (4, 2)
        np.testing.assert_allclose(ys[2], run_onnx(model, xs[2]))
        cex = validate_batch(model, spec, xs, regions=np.zeros(4, dtype=int))
        assert cex is not None and np.allclose(cex.x, xs[2])
        assert validate_batch(model, spec, xs[:2], regions=np.zeros(2, dtype=int)) is None
        assert validate_batch(model, spec, xs, limit=2) is None


def test_batch_whose_output_holds_the_batch_on_axis_1():
    # the output [2, N, 4]: one batched onnxruntime call must still give each point its own
    # values (it gave rows of the wrong points, so the attacks screened wrong outputs)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
             helper.make_node("MatMul", ["t", "w"], ["y"])]
    proto = make_model(nodes, {"x": (1, 2, 3)}, ["y"], {"w": rand(3, 4)}, batch_symbolic=True)
    data = proto.SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    xs = np.random.default_rng(1).uniform(-1, 1, (5, 6))
    np.testing.assert_array_equal(run_onnx_batch(model, xs),
                                  np.stack([run_onnx(model, x) for x in xs]))
