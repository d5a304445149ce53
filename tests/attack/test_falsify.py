"""Falsification on tiny hand-built networks."""

from __future__ import annotations

import time

import numpy as np
import torch
from conftest import abs_net, gap_spec, make_spec, mlp_model

from verifier.attack import TorchCondition, attack_boxes, falsify
from verifier.config import AttackConfig
from verifier.spec.types import InputRegion, OutputCondition, Spec

CONFIG = AttackConfig(restarts=4, steps=20, random_samples=16, time_share=1.0)
PGD_ONLY = AttackConfig(restarts=4, steps=30, random_samples=0, time_share=1.0)


def _falsify(model, spec, config=CONFIG, budget=5.0, seed=0):
    return falsify(model, spec, time.monotonic() + 60, config, seed=seed, budget_s=budget)


def test_finds_and_validates_violation(net):
    spec = gap_spec(1.9)
    cex = _falsify(net, spec)
    assert cex is not None
    assert spec.violated_by(cex.x, cex.y)
    assert np.all(cex.x.astype(np.float32).astype(np.float64) == cex.x)


def test_property_that_holds_gives_none(net):
    assert _falsify(net, gap_spec(2.5), budget=0.3) is None


def test_deadline_in_the_past_returns_quickly(net):
    start = time.monotonic()
    assert falsify(net, gap_spec(1.9), start - 1.0, CONFIG) is None
    assert falsify(net, gap_spec(1.9), start + 1.0, CONFIG, budget_s=0.0) is None
    assert time.monotonic() - start < 1.0


def test_time_share_limits_the_budget(net):
    start = time.monotonic()
    config = AttackConfig(restarts=4, steps=20, random_samples=16, time_share=0.05)
    assert falsify(net, gap_spec(2.5), start + 4.0, config) is None
    assert time.monotonic() - start < 2.0  # 5% of 4 s, with generous slack for a busy machine


def test_pgd_reaches_a_narrow_violation():
    # y0 = x0 + x1 - 2 relu(x0 - 0.5): the maximum 1.5 sits at the interior x0 = 0.5, x1 = 1.
    w1 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    b1 = np.array([0.0, 0.0, 0.0, -0.5])
    w2 = np.array([[1.0, 1.0, -1.0, -2.0]])
    model = mlp_model([(w1, b1), (w2, np.zeros(1))])
    spec = make_spec([0.0, 0.0], [1.0, 1.0], [[[-1.0]]], [[-1.49]])
    cex = _falsify(model, spec, PGD_ONLY)
    assert cex is not None and spec.violated_by(cex.x, cex.y)
    assert abs(cex.x[0] - 0.5) < 0.02


def test_many_disjuncts_one_satisfiable(net):
    d = 45
    coef = np.zeros((d, 2, 2))
    rhs = np.full((d, 2), np.inf)
    coef[:, 0, 0] = -1.0
    rhs[:, 0] = -3.0 - np.arange(d)  # y0 >= 3 + d: impossible
    coef[17, 0] = [-1.0, 1.0]
    rhs[17, 0] = -1.9  # y0 - y1 >= 1.9
    coef[17, 1] = [0.0, -1.0]
    rhs[17, 1] = 0.0  # and y1 >= 0 (always)
    spec = make_spec([-1.0, -1.0], [1.0, 1.0], coef, rhs)
    cex = _falsify(net, spec, PGD_ONLY)
    assert cex is not None and spec.violated_by(cex.x, cex.y)


def test_many_regions_only_one_violable(net):
    cond = OutputCondition(np.array([[[-1.0, 1.0]]]), np.array([[-1.9]]))
    regions = [InputRegion(np.array([a, -1.0]), np.array([a + 0.05, 1.0]), cond)
               for a in np.linspace(-0.9, 0.85, 36)]
    regions.append(InputRegion(np.array([0.96, -1.0]), np.array([1.0, 1.0]), cond))
    spec = Spec(tuple(regions), 2, 2)
    cex = _falsify(net, spec, PGD_ONLY)
    assert cex is not None and cex.region == len(regions) - 1
    assert spec.violated_by(cex.x, cex.y)


def test_deterministic_given_seed(net):
    spec = gap_spec(1.9)
    a = _falsify(net, spec, seed=3)
    b = _falsify(net, spec, seed=3)
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.x, b.x)


def test_rounding_at_box_edge(net):
    # The only float32 violations sit at the lower bound 0.7, which float32 rounds down.
    spec = make_spec([0.7, -1.0], [0.9, 0.0], [[[1.0, 0.0]]], [[1.40000016]])
    cex = _falsify(net, spec)
    assert cex is not None
    assert cex.x[0] >= 0.7 and spec.violated_by(cex.x, cex.y)


def test_symbolic_batch_model():
    model = abs_net("N")
    spec = gap_spec(1.95)
    cex = _falsify(model, spec)
    assert cex is not None and spec.violated_by(cex.x, cex.y)


def test_attack_boxes_on_many_sub_boxes(net):
    lower = np.array([[-1.0, -1.0], [-0.5, -1.0], [0.0, 0.0], [0.9, -1.0]])
    upper = np.array([[-0.9, 0.0], [0.5, 1.0], [0.2, 1.0], [1.0, 1.0]])
    cond = OutputCondition(np.array([[[-1.0, 1.0]]]), np.array([[-1.8]]))
    gen = torch.Generator().manual_seed(0)
    res = attack_boxes(net.graph, lower, upper, cond, steps=20, restarts=3, generator=gen)
    assert res.x.shape == (4, 2) and res.loss.shape == (4,)
    assert (res.loss <= 0).tolist() == [True, False, False, True]
    assert torch.all(res.x >= torch.as_tensor(lower, dtype=torch.float32))
    assert torch.all(res.x <= torch.as_tensor(upper, dtype=torch.float32))


def test_condition_loss_matches_holds():
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(5, 3, 4))
    rhs = rng.normal(size=(5, 3))
    rhs[1, 2] = np.inf
    cond = OutputCondition(coef, rhs)
    ys = rng.normal(size=(200, 4)) * 2
    loss = TorchCondition.from_condition(cond, "cpu", torch.float64).loss(torch.as_tensor(ys))
    for y, value in zip(ys, loss.tolist(), strict=True):
        assert (value <= 0) == cond.holds(y)


def test_two_outputs_are_flattened_in_order():
    from onnx import TensorProto, helper, numpy_helper

    from bounds.graph import Graph, Node, TensorInfo
    from verifier.onnx_import.loader import ImportedModel

    w1 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    w2 = np.array([[2.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    b1, b2 = np.zeros(3, np.float32), np.zeros(2, np.float32)
    proto = helper.make_model(helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
         helper.make_node("Relu", ["z"], ["h"]),
         helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                     (b2, "b2"))]),
        opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    graph = Graph(
        (TensorInfo("x", (1, 2), "x"),),
        (TensorInfo("z", (1, 3), "z"), TensorInfo("y", (1, 2), "y")),
        (Node("z", "Linear", ("x", None, None), (1, 3), consts={1: w1, 2: b1}),
         Node("h", "Relu", ("z",), (1, 3)),
         Node("y", "Linear", ("h", None, None), (1, 2), consts={1: w2, 2: b2})))
    model = ImportedModel(graph, proto.SerializeToString(), ("x",), ("z", "y"), ((1, 2),))
    # z1 = -x0 >= 0.5 and y0 = 2|x0| >= 1.8  ->  x0 <= -0.9
    spec = make_spec([-1.0, -1.0], [1.0, 1.0], [[[0, -1.0, 0, 0, 0], [0, 0, 0, -1.0, 0]]],
                     [[-0.5, -1.8]])
    cex = _falsify(model, spec)
    assert cex is not None and cex.y.shape == (5,) and cex.x[0] <= -0.9
    assert spec.violated_by(cex.x, cex.y)


def test_start_points_stay_in_the_box_and_half_start_on_faces():
    from verifier.attack.pgd import FACE_PROB, FACE_SHARE, start_points

    gen = torch.Generator().manual_seed(0)
    n, d = 20000, 6
    lo = torch.rand((n, d), generator=gen) - 1.0
    hi = lo + torch.rand((n, d), generator=gen) + 0.01
    x = start_points(lo, hi, gen)
    assert bool(((x >= lo) & (x <= hi)).all())
    at_lo, at_hi = x == lo, x == hi
    on_face = (at_lo | at_hi).any(1).float().mean().item()
    expected = FACE_SHARE * (1 - (1 - FACE_PROB) ** d)
    assert abs(on_face - expected) < 0.02
    # among face starts, each coordinate sits at its lower and its upper bound equally often
    assert abs(at_lo.float().mean().item() - at_hi.float().mean().item()) < 0.01
    assert abs(at_lo.float().mean().item() - FACE_SHARE * FACE_PROB / 2) < 0.01
