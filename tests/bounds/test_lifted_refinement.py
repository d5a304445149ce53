"""Intermediate CROWN refines a value read whole through positionwise moves in place of the
parts (``intermediate._values_to_refine``): an LSTM step's gate pre-activations are one Linear
output cut into four Slices, each the input of a Sigmoid or Tanh; one pass over the Linear's
rows replaces four, and the Slices follow it (``_Refiner._follows_tight``). The parts' intervals
are as tight as their own CROWN rows made them, enclose sampled values, and the final bound
does not move. Not lifted: sources only partly read, parts refined only where unstable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.analysis import relaxed_inputs
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
N_IN, W = 5, 6


def _cell_net(seed: int, gate_ops=("Sigmoid", "Sigmoid", "Sigmoid", "Tanh"),
              used=(0, 1, 2, 3)) -> Graph:
    """x -> Linear -> Tanh (h) -> Linear (pre, 4 W wide) -> four Slices (gates) -> gate ops ->
    i * g + f * h, times o -> Linear. ``used``: which gates the cell reads (others unread)."""
    rng = np.random.default_rng(seed)

    linear = linear_maker(rng)
    shape = (1, W)
    nodes = [linear("lin0", "x", W, N_IN), Node("h", "Tanh", ("lin0",), shape),
             linear("pre", "h", 4 * W, W)]
    acts = []
    for k, op in enumerate(gate_ops):
        if k not in used:
            acts.append("h")
            continue
        nodes.append(Node(f"part{k}", "Slice", ("pre",), shape,
                          {"axes": (1,), "starts": (k * W,), "ends": ((k + 1) * W,),
                           "steps": (1,)}))
        nodes.append(Node(f"gate{k}", op, (f"part{k}",), shape))
        acts.append(f"gate{k}")
    i, f, o, g = acts
    nodes += [Node("ig", "Mul", (i, g), shape), Node("fh", "Mul", (f, "h"), shape),
              Node("c", "Add", ("ig", "fh"), shape), Node("tc", "Tanh", ("c",), shape),
              Node("hout", "Mul", (o, "tc"), shape), linear("out", "hout", 3, W)]
    return Graph((TensorInfo("x", (1, N_IN)),), (TensorInfo("out", (1, 3)),), tuple(nodes))


def _box(seed: int, radius: float = 0.3) -> Interval:
    return random_box(seed, N_IN, radius)


def _no_lifting(graph, exact):
    return set(relaxed_inputs(graph)) - exact


def _bounds(graph, box, monkeypatch, lift: bool, alpha_iterations: int = 0):
    """(values CROWN refined, intermediates)."""
    patches = {} if lift else dict(_values_to_refine=_no_lifting)
    return refined_pass(graph, box, monkeypatch, alpha_iterations, **patches)


PARTS = [f"part{k}" for k in range(4)]


@pytest.mark.parametrize("alpha_iterations", [0, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_source_refined_once_and_parts_as_tight(seed, alpha_iterations, monkeypatch):
    graph, box = _cell_net(seed), _box(seed)
    refined, inter = _bounds(graph, box, monkeypatch, True, alpha_iterations)
    before_refined, before = _bounds(graph, box, monkeypatch, False, alpha_iterations)
    assert set(PARTS) <= before_refined and "pre" not in before_refined
    assert "pre" in refined and not set(PARTS) & refined
    for name in PARTS + [f"gate{k}" for k in range(4)] + ["c", "hout"]:
        new, old = inter.bounds[name], before.bounds[name]
        slack = 1e-6 * (1 + old.lower.abs() + old.upper.abs())
        assert bool((new.lower >= old.lower - slack).all()), name
        assert bool((new.upper <= old.upper + slack).all()), name
    assert_samples_enclosed(graph, inter, box, PARTS + ["c", "hout"], seed + 7)


@pytest.mark.parametrize("seed", [0, 1])
def test_final_bound_is_unchanged(seed, monkeypatch):
    assert_final_bound_unchanged(_cell_net(seed), _box(seed), monkeypatch,
                                 _values_to_refine=_no_lifting)


def test_a_source_read_only_in_part_is_not_lifted(monkeypatch):
    """Two gates read (f and o stay h): half of pre's rows would be bounded for nothing."""
    graph = _cell_net(0, used=(0, 3))
    refined, _ = _bounds(graph, _box(0), monkeypatch, True)
    assert "pre" not in refined and {"part0", "part3"} <= refined


def test_parts_refined_only_where_unstable_are_not_lifted(monkeypatch):
    """Relu gates: each part is refined at its unstable positions only, which the source's
    whole pass would not save."""
    graph = _cell_net(1, gate_ops=("Relu", "Relu", "Relu", "Relu"))
    refined, _ = _bounds(graph, _box(1, radius=0.6), monkeypatch, True)
    assert "pre" not in refined


def test_a_slice_of_an_exact_value_is_exact():
    """A Slice of the input's first Linear is a selection of exactly bounded coordinates: IBP
    is its range, so no CROWN rows are spent on it."""
    from bounds.engine.analysis import values_ibp_bounds_exactly

    graph = Graph((TensorInfo("x", (1, N_IN)),), (TensorInfo("s", (1, 2)),), (
        Node("lin", "Linear", ("x", None, None), (1, 4), {},
             {1: np.ones((4, N_IN), np.float32), 2: np.zeros(4, np.float32)}),
        Node("part", "Slice", ("lin",), (1, 2), {"axes": (1,), "starts": (1,), "ends": (3,),
                                                 "steps": (1,)}),
        Node("s", "Sigmoid", ("part",), (1, 2))))
    assert {"lin", "part", "s"} <= values_ibp_bounds_exactly(graph)
