"""Intermediate CROWN skips a value that is a positionwise function of a value already
bounded at every position (``analysis.positionwise``; ``_Refiner._follows_tight``): a
HardSwish-style gate w * Clip(w / 6 + 1/2, 0, 1) after a refined Linear. The skipped values'
intervals, from IBP over the refined input's, are as tight as CROWN made them before (up to
the rounding allowances), enclose sampled values, and the final bounds do not move."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval

F64 = torch.float64
N_IN, WIDTH = 5, 16


@pytest.fixture(autouse=True)
def _float64_adjoints(monkeypatch):
    """Passes over different row sets are compared closely (float32 adjoints would round
    differently with different row counts)."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _gated_net(seed: int) -> Graph:
    """Linear -> Relu -> Linear (w) -> w * Clip(w / 6 + 1/2, 0, 1) -> Linear."""
    rng = np.random.default_rng(seed)

    def linear(name, src, n_out, n_in):
        w = (rng.normal(size=(n_out, n_in)) * 2 / np.sqrt(n_in)).astype(np.float32)
        b = (rng.normal(size=n_out) * 0.5).astype(np.float32)
        return Node(name, "Linear", (src, None, None), (1, n_out), {}, {1: w, 2: b})

    shape = (1, WIDTH)
    nodes = (
        linear("lin0", "x", WIDTH, N_IN),
        Node("relu0", "Relu", ("lin0",), shape),
        linear("w", "relu0", WIDTH, WIDTH),
        Node("scaled", "Mul", ("w", None), shape, {}, {1: np.full(shape, 1 / 6, np.float32)}),
        Node("shifted", "Add", ("scaled", None), shape, {}, {1: np.full(shape, 0.5, np.float32)}),
        Node("gate", "Clip", ("shifted",), shape, {"min": 0.0, "max": 1.0}),
        Node("gated", "Mul", ("w", "gate"), shape),
        linear("out", "gated", 3, WIDTH),
    )
    return Graph((TensorInfo("x", (1, N_IN)),), (TensorInfo("out", (1, 3)),), nodes)


def _box(seed: int, radius: float = 0.4, batch: int = 2) -> Interval:
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, 1, N_IN), generator=g, dtype=F64)
    return Interval(centre - radius, centre + radius)


def _bounds(graph, box, monkeypatch, skip: bool, alpha_iterations: int = 0):
    """(values CROWN refined, intermediates); ``skip`` False: every needed value refined."""
    refined: list[str] = []
    original = intermediate.crown_interval

    def counted(inter, name, mask, *args, **kwargs):
        refined.append(name)
        return original(inter, name, mask, *args, **kwargs)

    monkeypatch.setattr(intermediate, "crown_interval", counted)
    if not skip:
        monkeypatch.setattr(intermediate, "positionwise", lambda node: False)
    with torch.enable_grad():
        inter = compute_intermediate(graph, box, method="crown",
                                     alpha_iterations=alpha_iterations)
    monkeypatch.undo()
    return set(refined), inter


@pytest.mark.parametrize("alpha_iterations", [0, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gate_values_are_not_refined_and_stay_as_tight(seed, alpha_iterations, monkeypatch):
    graph, box = _gated_net(seed), _box(seed)
    refined, inter = _bounds(graph, box, monkeypatch, True, alpha_iterations)
    every, before = _bounds(graph, box, monkeypatch, False, alpha_iterations)
    assert {"shifted", "gate"} <= every and not {"shifted", "gate"} & refined
    assert "w" in refined
    for name in ("w", "scaled", "shifted", "gate", "gated"):
        new, old = inter.bounds[name], before.bounds[name]
        slack = 1e-6 * (1 + old.lower.abs() + old.upper.abs())
        assert bool((new.lower >= old.lower - slack).all()), name
        assert bool((new.upper <= old.upper + slack).all()), name
    g = torch.Generator().manual_seed(seed + 7)
    x = box.lower + (box.upper - box.lower) * torch.rand((300, *box.lower.shape), generator=g,
                                                          dtype=F64)
    for name in ("shifted", "gate", "gated"):
        cut = Graph(graph.inputs, (TensorInfo(name, graph.shape_of(name)),),
                    graph.nodes[:[n.name for n in graph.nodes].index(name) + 1])
        v = run_graph(cut, x.reshape(-1, 1, N_IN))[0].reshape(300, 2, 1, WIDTH)
        b = inter.bounds[name]
        assert bool((v >= b.lower - 1e-9).all()) and bool((v <= b.upper + 1e-9).all()), name


def test_a_value_whose_input_was_refined_only_where_unstable_is_still_refined(monkeypatch):
    """A value that feeds only Relus is refined only at its unstable positions, so a
    positionwise function of it is not tight: here rz = Relu(z), a product's operand, keeps
    its CROWN rows; once rz is refined at every position, neg = -rz follows it."""
    rng = np.random.default_rng(3)
    shape = (1, WIDTH)

    def linear(name, src, n_out, n_in):
        w = (rng.normal(size=(n_out, n_in)) * 2 / np.sqrt(n_in)).astype(np.float32)
        return Node(name, "Linear", (src, None, None), (1, n_out), {},
                    {1: w, 2: np.zeros(n_out, np.float32)})

    nodes = (linear("a", "x", WIDTH, N_IN), Node("r", "Relu", ("a",), shape),
             linear("z", "r", WIDTH, WIDTH), Node("rz", "Relu", ("z",), shape),
             Node("neg", "Neg", ("rz",), shape), Node("s", "Sigmoid", ("neg",), shape),
             Node("p", "Mul", ("rz", "s"), shape), linear("out", "p", 3, WIDTH))
    graph = Graph((TensorInfo("x", (1, N_IN)),), (TensorInfo("out", (1, 3)),), nodes)
    refined, _ = _bounds(graph, _box(4), monkeypatch, True)
    assert {"z", "rz"} <= refined and "neg" not in refined


@pytest.mark.parametrize("seed", [0, 1])
def test_final_bound_is_unchanged(seed, monkeypatch):
    graph, box = _gated_net(seed), _box(seed)
    coef = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]], dtype=F64).expand(2, -1, -1)
    rhs = torch.zeros((2, 2), dtype=F64)
    results = {}
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(intermediate, "positionwise", lambda node: False)
        results[skip] = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
        monkeypatch.undo()
    torch.testing.assert_close(results[True], results[False], rtol=1e-6, atol=1e-7)
