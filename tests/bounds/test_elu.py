"""Elu(alpha): the shape the rule's docstring states (convex exactly for alpha <= 1, a concave
kink at 0 above), and the alphas it refuses, in the rule and in the importer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bounds.graph import Node
from bounds.registry import UnsupportedOpError, rules
from bounds.rules.elu import ELU_MAX_ALPHA, alpha_problem, elu_curve
from bounds.types import Interval
from tests.onnx_import.onnx_util import one_node
from verifier.onnx_import.loader import import_proto

X = torch.linspace(-6.0, 4.0, 201, dtype=torch.float64)


def _midpoint_gap(alpha: float) -> torch.Tensor:
    """f((a + b) / 2) - (f(a) + f(b)) / 2 over pairs of grid points (<= 0 everywhere: convex)."""
    f = elu_curve(alpha).f
    a, b = X.reshape(-1, 1), X.reshape(1, -1)
    return f((a + b) / 2) - (f(a) + f(b)) / 2


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_convex_for_alpha_up_to_one(alpha):
    assert bool((_midpoint_gap(alpha) <= 1e-12).all())
    lower, upper = torch.tensor([-3.0, -1.0, 0.5]), torch.tensor([-1.0, 2.0, 3.0])
    assert bool((elu_curve(alpha).curvature(lower, upper) == 1).all())


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_concave_kink_above_one(alpha):
    assert bool((_midpoint_gap(alpha) > 1e-6).any())  # a midpoint above its chord: not convex
    # convex on either side of 0, mixed across it (the curvature that picks the slopes)
    got = elu_curve(alpha).curvature(torch.tensor([-3.0, 0.0, -1.0]), torch.tensor([0.0, 2.0, 1.0]))
    assert got.tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("alpha", [-0.5, ELU_MAX_ALPHA * 1.5, float("nan"), float("inf")])
def test_rule_refuses_alphas_it_does_not_handle(alpha):
    assert alpha_problem(alpha)
    node = Node("y", "Elu", ("x",), (1,), {"alpha": alpha})
    x = torch.zeros(1, 1, dtype=torch.float64)
    rule = rules().get("Elu")
    for call in (lambda: rule.forward(node, [x]), lambda: rule.ibp(node, [Interval(x, x)]),
                 lambda: rule.relax(node, x, x)):
        with pytest.raises(ValueError, match="alpha"):
            call()


@pytest.mark.parametrize("alpha", [0.0, 1.0, ELU_MAX_ALPHA])
def test_handled_alphas(alpha):
    assert alpha_problem(alpha) is None


@pytest.mark.parametrize("alpha,words", [(-0.5, "decreasing"), (10.0, "rounding")])
def test_importer_refuses_with_the_rules_reason(alpha, words):
    proto = one_node("Elu", {"x": (1, 4)}, alpha=alpha)
    data = proto.SerializeToString()
    with pytest.raises(UnsupportedOpError, match=words) as info:
        import_proto(onnx.load_model_from_string(data), data)
    assert info.value.op == "Elu" and info.value.node == "the_elu"


def test_importer_default_alpha_is_one():
    proto = one_node("Elu", {"x": (1, 4)})
    data = proto.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    (node,) = [n for n in graph.nodes if n.op == "Elu"]
    assert node.attrs["alpha"] == 1.0
    y = rules().get("Elu").forward(node, [torch.tensor([[-1.0, 0.0, 2.0, -30.0]])])
    np.testing.assert_allclose(y.numpy(), [[np.expm1(-1.0), 0.0, 2.0, np.expm1(-30.0)]],
                               rtol=1e-6)
