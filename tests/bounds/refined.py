"""Shared by the tests of which values intermediate CROWN refines: the values it refined in
one ``compute_intermediate`` pass, float64 adjoints so that passes over different row sets
compare closely, random Linear nodes, sampled points inside the bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.graph import Graph, Node, TensorInfo
from bounds.types import Interval


@pytest.fixture
def float64_adjoints(monkeypatch):
    """(float32 adjoints would round differently with different row counts)"""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def refined_pass(graph, box, monkeypatch, alpha_iterations: int = 0, **patches):
    """(the values CROWN refined, the intermediates) of one pass, with ``patches`` (names in
    ``bounds.engine.intermediate`` -> replacements) in force during it only."""
    refined: list[str] = []
    original = intermediate.crown_interval

    def counted(inter, name, mask, *args, **kwargs):
        refined.append(name)
        return original(inter, name, mask, *args, **kwargs)

    monkeypatch.setattr(intermediate, "crown_interval", counted)
    for name, value in patches.items():
        monkeypatch.setattr(intermediate, name, value)
    with torch.enable_grad():
        inter = compute_intermediate(graph, box, method="crown",
                                     alpha_iterations=alpha_iterations)
    monkeypatch.undo()
    return set(refined), inter


def random_box(seed: int, n_in: int, radius: float, batch: int = 2) -> Interval:
    """``batch`` float64 boxes [batch, 1, n_in] of half-width ``radius`` around random centres."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, 1, n_in), generator=g, dtype=torch.float64)
    return Interval(centre - radius, centre + radius)


def linear_maker(rng):
    """``linear(name, src, n_out, n_in)``: a Linear node with random weights (scale 2 /
    sqrt(n_in)) and biases drawn from ``rng``."""
    def linear(name, src, n_out, n_in):
        w = (rng.normal(size=(n_out, n_in)) * 2 / np.sqrt(n_in)).astype(np.float32)
        b = (rng.normal(size=n_out) * 0.5).astype(np.float32)
        return Node(name, "Linear", (src, None, None), (1, n_out), {}, {1: w, 2: b})

    return linear


def assert_samples_enclosed(graph, inter, box, names, seed: int, count: int = 300) -> None:
    """Values ``names`` at ``count`` points sampled in ``box`` lie in ``inter``'s bounds."""
    g = torch.Generator().manual_seed(seed)
    x = box.lower + (box.upper - box.lower) * torch.rand((count, *box.lower.shape), generator=g,
                                                          dtype=box.lower.dtype)
    order = [n.name for n in graph.nodes]
    for name in names:
        cut = Graph(graph.inputs, (TensorInfo(name, graph.shape_of(name)),),
                    graph.nodes[:order.index(name) + 1])
        v = run_graph(cut, x.reshape(-1, *graph.inputs[0].shape))[0]
        b = inter.bounds[name]
        v = v.reshape(count, *b.lower.shape)
        assert bool((v >= b.lower - 1e-9).all()) and bool((v <= b.upper + 1e-9).all()), name


def assert_final_bound_unchanged(graph, box, monkeypatch, **patches) -> None:
    """The final CROWN bound of two output differences is the same with and without
    ``patches`` (names in ``bounds.engine.intermediate`` -> replacements)."""
    from bounds.engine.spec_bounds import BoundOptions, bound_spec

    f64 = box.lower.dtype
    coef = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]], dtype=f64).expand(
        box.lower.shape[0], -1, -1)
    rhs = torch.zeros((box.lower.shape[0], 2), dtype=f64)
    results = []
    for patched in (False, True):
        for name, value in (patches.items() if patched else ()):
            monkeypatch.setattr(intermediate, name, value)
        results.append(bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower)
        monkeypatch.undo()
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
