"""Piecewise-constant rules (comparisons, logic, Select, Cast, ArgMax, OneHot): exact where the
input range fixes the output, the hull where it does not; the engines (IBP, CROWN,
alpha-CROWN), branch-and-bound and the MILP encoding cope with nodes that have no relaxation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, Node, TensorInfo
from bounds.registry import rules
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


def _iv(lo, hi) -> Interval:
    return Interval(torch.tensor([lo], dtype=F64), torch.tensor([hi], dtype=F64))


def _ibp(op, attrs, *args, shape=(2,)):
    names = tuple(None if not isinstance(a, Interval) else f"x{i}" for i, a in enumerate(args))
    consts = {i: a for i, a in enumerate(args) if not isinstance(a, Interval)}
    node = Node("y", op, names, shape, attrs, consts)
    out = rules().get(op).ibp(node, [a if isinstance(a, Interval) else torch.as_tensor(a, dtype=F64)
                                     for a in args])
    return out.lower[0].tolist(), out.upper[0].tolist()


def test_comparisons_exact_when_fixed_hull_otherwise():
    a, b = _iv([0.0, 0.0], [1.0, 1.0]), _iv([2.0, 0.5], [3.0, 2.0])
    assert _ibp("Greater", {}, b, a) == ([1.0, 0.0], [1.0, 1.0])
    assert _ibp("Greater", {}, a, b) == ([0.0, 0.0], [0.0, 1.0])
    assert _ibp("GreaterOrEqual", {}, _iv([1.0, 1.0], [1.0, 2.0]), _iv([0.0, 2.0], [1.0, 3.0])) \
        == ([1.0, 0.0], [1.0, 1.0])
    point = _iv([3.0, 3.0], [3.0, 3.0])
    assert _ibp("Equal", {}, point, np.array([3.0, 4.0])) == ([1.0, 0.0], [1.0, 0.0])
    assert _ibp("Equal", {}, a, b) == ([0.0, 0.0], [0.0, 1.0])


def test_logic_and_select_follow_the_fixed_operands():
    t, f, either = _iv([1.0, 1.0], [1.0, 1.0]), _iv([0.0, 0.0], [0.0, 0.0]), \
        _iv([0.0, 0.0], [1.0, 1.0])
    assert _ibp("And", {}, t, either) == ([0.0, 0.0], [1.0, 1.0])
    assert _ibp("And", {}, f, either) == ([0.0, 0.0], [0.0, 0.0])
    assert _ibp("Or", {}, t, either) == ([1.0, 1.0], [1.0, 1.0])
    x, y = _iv([1.0, 2.0], [2.0, 3.0]), _iv([-5.0, -4.0], [-4.0, -3.0])
    assert _ibp("Select", {}, t, x, y) == ([1.0, 2.0], [2.0, 3.0])
    assert _ibp("Select", {}, f, x, y) == ([-5.0, -4.0], [-4.0, -3.0])
    assert _ibp("Select", {}, either, x, y) == ([-5.0, -4.0], [2.0, 3.0])


def test_cast_truncates_and_widens_past_the_type_range():
    int8 = {"to": "int", "min": -128.0, "max": 127.0, "via": 32}
    assert _ibp("Cast", int8, _iv([-1.7, 2.2], [-0.5, 2.9])) == ([-1.0, 2.0], [0.0, 2.0])
    assert _ibp("Cast", int8, _iv([-1.0, 100.0], [1.0, 128.5])) == ([-1.0, -128.0],
                                                                     [1.0, 127.0])
    assert _ibp("Cast", {"to": "bool"}, _iv([0.0, 0.5], [0.0, 2.0])) == ([0.0, 1.0], [0.0, 1.0])


def test_argmax_exact_with_one_candidate():
    # index 2 wins for sure in the first row; rows: [B=1, 3 candidates]
    sure = Interval(torch.tensor([[0.0, 0.1, 1.0]], dtype=F64),
                    torch.tensor([[0.5, 0.9, 2.0]], dtype=F64))
    node = Node("y", "ArgMax", ("x",), (), {"axis": 0, "keepdims": 0, "last": 0})
    out = rules().get("ArgMax").ibp(node, [sure])
    assert (out.lower.item(), out.upper.item()) == (2.0, 2.0)
    open_ = Interval(sure.lower, torch.tensor([[0.5, 1.5, 2.0]], dtype=F64))
    out = rules().get("ArgMax").ibp(node, [open_])
    assert (out.lower.item(), out.upper.item()) == (1.0, 2.0)


def test_onehot_fixed_index_is_exact():
    attrs = {"depth": 3, "axis": 1, "on": 1.0, "off": 0.0}
    lo, hi = _ibp("OneHot", attrs, _iv([2.0], [2.0]), shape=(1, 3))
    assert lo == hi == [[0.0, 0.0, 1.0]]
    lo, hi = _ibp("OneHot", attrs, _iv([-1.0], [0.0]), shape=(1, 3))  # -1 means index 2
    assert lo == [[0.0, 0.0, 0.0]] and hi == [[1.0, 0.0, 1.0]]


def _argmax_graph(seed: int) -> Graph:
    """random MLP (3 classes) -> ArgMax -> Equal(., 1) -> OneHot: output [1, 1, 3] + count."""
    body = random_mlp([4, 12, 12, 3], seed=seed)
    logits = body.outputs[0].name
    nodes = list(body.nodes) + [
        Node("arg", "ArgMax", (logits,), (1, 1), {"axis": 1, "keepdims": 1, "last": 0}),
        Node("is1", "Equal", ("arg", None), (1, 1), {}, {1: np.array([[1.0]])}),
        Node("hot", "OneHot", ("arg",), (1, 1, 3), {"depth": 3, "axis": 2, "on": 1.0,
                                                     "off": 0.0}),
        Node("flat", "Reshape", ("hot",), (1, 3)),
        Node("out", "Concat", ("flat", "is1"), (1, 4), {"axis": 1}),
    ]
    return Graph(body.inputs, (TensorInfo("out", (1, 4)),), tuple(nodes))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
@pytest.mark.parametrize("width", [1e-3, 0.3])
def test_engines_enclose_graphs_with_step_nodes(seed, method, width):
    graph = _argmax_graph(seed)
    rng = np.random.default_rng(seed)
    center = rng.normal(size=4)
    lo = torch.as_tensor(center - width, dtype=torch.float32).to(F64).reshape(1, 1, 4)
    hi = torch.as_tensor(center + width, dtype=torch.float32).to(F64).reshape(1, 1, 4)
    coef = torch.as_tensor(np.vstack([np.eye(4), -np.eye(4)])[None], dtype=F64)
    res = bound_spec(graph, Interval(lo, hi), coef, torch.zeros((1, 8), dtype=F64),
                     BoundOptions(method=method, intermediate="crown"))
    xs = (lo + (hi - lo) * torch.rand((3000, 1, 4), generator=torch.Generator().manual_seed(
        seed), dtype=F64)).float()
    ys = run_graph(graph, xs)[0].reshape(len(xs), -1).double()
    values = ys @ coef[0].T
    assert torch.all(values.min(0).values >= res.lower[0] - 1e-9)
    if width == 1e-3:  # a tiny box fixes the class: the bounds are exact
        assert torch.allclose(res.lower[0], values.min(0).values, atol=1e-9), res.lower


def test_milp_refuses_step_ops_clearly():
    """ArgMax has an encoding (verifier/milp/choices.py); Equal and OneHot have none."""
    from verifier.milp.encode import MilpUnsupportedError, check_supported

    with pytest.raises(MilpUnsupportedError, match="Equal, OneHot") as err:
        check_supported(_argmax_graph(0))
    assert "ArgMax" not in str(err.value)


def test_crown_refines_the_inputs_of_step_nodes():
    """ArgMax/Equal/OneHot of CROWN-bounded logits decide more than of IBP-bounded ones
    (8 random nets, boxes of half-width 0.2: summed bound -24 with IBP, -19 with CROWN; the
    same -24 for both when the step rules declare no backward)."""
    totals = {"ibp": 0.0, "crown": 0.0}
    coef = torch.as_tensor(np.vstack([np.eye(4), -np.eye(4)])[None], dtype=F64)
    for seed in range(8):
        graph = _argmax_graph(seed)
        center = np.random.default_rng(seed).normal(size=4)
        box = Interval(torch.as_tensor(center - 0.2).reshape(1, 1, 4),
                       torch.as_tensor(center + 0.2).reshape(1, 1, 4))
        for method in totals:
            res = bound_spec(graph, box, coef, torch.zeros((1, 8), dtype=F64),
                             BoundOptions(method=method, intermediate="crown"))
            totals[method] += float(res.lower.sum())
    assert totals["crown"] > totals["ibp"] + 4, totals


def test_softmax_simplex_bound_on_a_rank1_tensor():
    """Regression: a rank-1 softmax (no batch axis in the model) left [B, S] after the
    knapsack and simplex_lower indexed a third axis (IndexError)."""
    from bounds.rules.softmax import simplex_lower

    box = Interval(torch.full((2, 3), 0.1, dtype=F64), torch.full((2, 3), 0.6, dtype=F64))
    coef = torch.tensor([[[1.0, 0.0, 0.0], [0.0, -1.0, 1.0]]], dtype=F64).expand(2, 2, 3)
    lower = simplex_lower(coef, box, axis=0)
    assert lower.shape == (2, 2)
    # y0 >= 1 - 0.6 - 0.6 = -0.2 is below the box's 0.1; y2 - y1 >= 0.1 - 0.6
    assert torch.allclose(lower, torch.tensor([[0.1, -0.5]] * 2, dtype=F64))
