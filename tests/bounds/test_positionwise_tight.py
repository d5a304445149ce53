"""Intermediate CROWN skips a value that is a positionwise function of a value already
bounded at every position (``analysis.positionwise``; ``_Refiner._follows_tight``): a
HardSwish-style gate w * Clip(w / 6 + 1/2, 0, 1) after a refined Linear. The skipped values'
intervals, from IBP over the refined input's, are as tight as CROWN made them before (up to
the rounding allowances), enclose sampled values, and the final bounds do not move."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval
from tests.bounds.refined import (  # noqa: F401 (float64_adjoints: a fixture)
    assert_final_bound_unchanged,
    assert_samples_enclosed,
    float64_adjoints,
    linear_maker,
    random_box,
    refined_pass,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("float64_adjoints")
N_IN, WIDTH = 5, 16


def _gated_net(seed: int) -> Graph:
    """Linear -> Relu -> Linear (w) -> w * Clip(w / 6 + 1/2, 0, 1) -> Linear."""
    rng = np.random.default_rng(seed)

    linear = linear_maker(rng)
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


def _box(seed: int, radius: float = 0.4) -> Interval:
    return random_box(seed, N_IN, radius)


def _bounds(graph, box, monkeypatch, skip: bool, alpha_iterations: int = 0):
    """(values CROWN refined, intermediates)."""
    patches = {} if skip else dict(positionwise=lambda node: False)
    return refined_pass(graph, box, monkeypatch, alpha_iterations, **patches)


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
    assert_samples_enclosed(graph, inter, box, ("shifted", "gate", "gated"), seed + 7)


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
    assert_final_bound_unchanged(_gated_net(seed), _box(seed), monkeypatch,
                                 positionwise=lambda node: False)
