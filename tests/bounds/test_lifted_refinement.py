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

import bounds.engine.intermediate as intermediate
from bounds.engine.analysis import relaxed_inputs
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval

F64 = torch.float64
N_IN, W = 5, 6


@pytest.fixture(autouse=True)
def _float64_adjoints(monkeypatch):
    """Passes over different row sets are compared closely (float32 adjoints would round
    differently with different row counts)."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _cell_net(seed: int, gate_ops=("Sigmoid", "Sigmoid", "Sigmoid", "Tanh"),
              used=(0, 1, 2, 3)) -> Graph:
    """x -> Linear -> Tanh (h) -> Linear (pre, 4 W wide) -> four Slices (gates) -> gate ops ->
    i * g + f * h, times o -> Linear. ``used``: which gates the cell reads (others unread)."""
    rng = np.random.default_rng(seed)

    def linear(name, src, n_out, n_in):
        w = (rng.normal(size=(n_out, n_in)) * 2 / np.sqrt(n_in)).astype(np.float32)
        b = (rng.normal(size=n_out) * 0.5).astype(np.float32)
        return Node(name, "Linear", (src, None, None), (1, n_out), {}, {1: w, 2: b})

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


def _box(seed: int, radius: float = 0.3, batch: int = 2) -> Interval:
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, 1, N_IN), generator=g, dtype=F64)
    return Interval(centre - radius, centre + radius)


def _no_lifting(graph, exact):
    return set(relaxed_inputs(graph)) - exact


def _bounds(graph, box, monkeypatch, lift: bool, alpha_iterations: int = 0):
    """(values CROWN refined, intermediates)."""
    refined: list[str] = []
    original = intermediate.crown_interval

    def counted(inter, name, mask, *args, **kwargs):
        refined.append(name)
        return original(inter, name, mask, *args, **kwargs)

    monkeypatch.setattr(intermediate, "crown_interval", counted)
    if not lift:
        monkeypatch.setattr(intermediate, "_values_to_refine", _no_lifting)
    with torch.enable_grad():
        inter = compute_intermediate(graph, box, method="crown",
                                     alpha_iterations=alpha_iterations)
    monkeypatch.undo()
    return set(refined), inter


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
    g = torch.Generator().manual_seed(seed + 7)
    x = box.lower + (box.upper - box.lower) * torch.rand((300, *box.lower.shape), generator=g,
                                                          dtype=F64)
    for name in PARTS + ["c", "hout"]:
        cut = Graph(graph.inputs, (TensorInfo(name, graph.shape_of(name)),),
                    graph.nodes[:[n.name for n in graph.nodes].index(name) + 1])
        v = run_graph(cut, x.reshape(-1, 1, N_IN))[0].reshape(300, 2, 1, W)
        b = inter.bounds[name]
        assert bool((v >= b.lower - 1e-9).all()) and bool((v <= b.upper + 1e-9).all()), name


@pytest.mark.parametrize("seed", [0, 1])
def test_final_bound_is_unchanged(seed, monkeypatch):
    graph, box = _cell_net(seed), _box(seed)
    coef = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]], dtype=F64).expand(2, -1, -1)
    rhs = torch.zeros((2, 2), dtype=F64)
    results = {}
    for lift in (True, False):
        if not lift:
            monkeypatch.setattr(intermediate, "_values_to_refine", _no_lifting)
        results[lift] = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
        monkeypatch.undo()
    torch.testing.assert_close(results[True], results[False], rtol=1e-6, atol=1e-7)


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
