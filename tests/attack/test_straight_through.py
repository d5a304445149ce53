"""Straight-through surrogates: the attack descends through steps (Sign, Floor, Round) with the
steps' own values, and alternates with the gradient-free search where only they give a
gradient."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.graph import Node
from bounds.registry import rules
from tests.attack.conftest import abs_net, make_spec
from verifier.attack.falsify import Falsifier
from verifier.attack.objective import TorchCondition
from verifier.attack.pgd import has_gradient, has_surrogates, pgd
from verifier.config import AttackConfig
from verifier.onnx_import.loader import import_proto

N = 20
SURROGATE_OPS = sorted(op for op, rule in rules().items() if rule.surrogate is not None)


def test_the_steps_have_surrogates():
    assert {"Sign", "Floor", "Round"} <= set(SURROGATE_OPS)


@pytest.mark.parametrize("op", SURROGATE_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_surrogate_keeps_the_values_and_passes_the_gradient(op, dtype):
    rule = rules().get(op)
    node = Node("n", op, ("x",), (1, 64))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, generator=gen, dtype=dtype) * 3
    x[0, :8] = torch.tensor([0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -1.5, 1e-30], dtype=dtype)
    x[1, :2] = torch.tensor([float("inf"), -float("inf")], dtype=dtype)
    x.requires_grad_(True)
    value = rule.surrogate(node, [x])
    assert torch.equal(value, rule.forward(node, [x.detach()]))  # bit for bit, ties and zeros
    weights = torch.randn(8, 64, generator=gen, dtype=dtype)
    (grad,) = torch.autograd.grad((value * weights).sum(), x)
    assert torch.equal(grad, weights)


def _quantized_sum(n: int = N) -> onnx.ModelProto:
    """y = sum_i s_i sign(x_i - t_i) + sum_i round(3 x_i) / 100 on x in [-1, 1]^n: only the
    steps carry x to y."""
    rng = np.random.default_rng(3)
    s = rng.choice([-1.0, 1.0], n).astype(np.float32)
    t = rng.uniform(-0.5, 0.5, n).astype(np.float32)
    nodes = [helper.make_node("Sub", ["x", "t"], ["d"]), helper.make_node("Sign", ["d"], ["g"]),
             helper.make_node("Mul", ["x", "three"], ["x3"]),
             helper.make_node("Round", ["x3"], ["r"]),
             helper.make_node("Gemm", ["g", "s"], ["y0"], transB=1),
             helper.make_node("Gemm", ["r", "tiny"], ["y1"], transB=1),
             helper.make_node("Add", ["y0", "y1"], ["y"])]
    inits = {"t": t.reshape(1, n), "s": s.reshape(1, n),
             "three": np.float32(3.0), "tiny": np.full((1, n), 0.01, np.float32)}
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _model():
    proto = _quantized_sum()
    data = proto.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def _unsafe_spec():
    """Unsafe when y >= 19.5: every x_i on the side of t_i that s_i picks (one orthant of
    2^20; the cheap points' corners and random vertices miss it)."""
    return make_spec(-np.ones(N), np.ones(N), [[[-1.0]]], [[-19.5]])


def test_pgd_descends_through_steps():
    model, spec = _model(), _unsafe_spec()
    cond = TorchCondition.from_condition(spec.regions[0].condition, "cpu", torch.float32)
    x = torch.zeros((1, N))
    lo, hi = -torch.ones((1, N)), torch.ones((1, N))
    assert has_gradient(model.graph, cond, x)
    assert not has_gradient(model.graph, cond, x, surrogate=False)  # the true gradient is 0
    _, loss = pgd(model.graph, cond, x, lo, hi, steps=20)
    assert float(loss.min()) < 0  # the orthant reached (without the surrogate x stays at 0)


def test_falsifier_alternates_where_only_steps_give_a_gradient():
    model, spec = _model(), _unsafe_spec()
    # (no bound-guided points: CROWN's vertices would find the orthant before any PGD round)
    attacks = Falsifier(model, spec, AttackConfig(guided=False), seed=0)
    cex = attacks.run(time.monotonic() + 20, budget_s=20)
    assert attacks.stepped is True
    assert cex is not None and spec.regions[0].condition.holds(cex.y)


def test_falsifier_keeps_pgd_alone_where_the_graph_has_a_gradient():
    spec = make_spec([-1.0, -1.0], [1.0, 1.0], [[[-1.0, 0.0]]], [[-1.5]])  # 2|x0| >= 1.5
    attacks = Falsifier(abs_net(), spec, AttackConfig(), seed=0)
    cex = attacks.run(time.monotonic() + 10, budget_s=5)
    assert cex is not None
    assert attacks.stepped in (False, None)  # None: found before the gradient was looked at
    assert not has_surrogates(abs_net().graph) and has_surrogates(_model().graph)
