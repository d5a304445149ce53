"""Intermediate CROWN rows of a Linear node's output started at its input (``linear_rows``):
the same bounds as the generic one-hot pass (rounding allowances included), enclosing the
values of sampled points, with and without record_linear, on batches of domains."""

from __future__ import annotations

import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.linear_rows import linear_rows
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


def _boxes(seed: int, n_in: int, batch: int) -> Interval:
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, 1, n_in), generator=gen, dtype=F64)
    radius = 0.2 + torch.rand((batch, 1, n_in), generator=gen, dtype=F64)
    return Interval(centre - radius, centre + radius)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
@pytest.mark.parametrize(("seed", "batch", "record"), [(0, 1, False), (1, 3, False),
                                                        (2, 2, True)])
def test_same_bounds_as_the_one_hot_pass_and_enclose_samples(monkeypatch, activation, seed,
                                                              batch, record):
    graph = random_mlp([6, 12, 12, 12, 3], seed=seed, activation=activation)
    box = _boxes(seed, 6, batch)
    fast = compute_intermediate(graph, box, method="crown", record_linear=record)
    monkeypatch.setattr(intermediate, "linear_rows", lambda *a, **k: None)
    plain = compute_intermediate(graph, box, method="crown", record_linear=record)
    for name, iv in plain.bounds.items():
        assert torch.allclose(fast.bounds[name].lower, iv.lower, rtol=0, atol=1e-12), name
        assert torch.allclose(fast.bounds[name].upper, iv.upper, rtol=0, atol=1e-12), name
    if record:
        for name, lin in plain.linear_bounds.items():
            got = fast.linear_bounds[name]
            for a, b in zip(vars(got).values(), vars(lin).values(), strict=True):
                if isinstance(a, torch.Tensor):
                    assert torch.allclose(a, b, rtol=0, atol=1e-12), name
    gen = torch.Generator().manual_seed(seed + 10)
    x = box.lower + (box.upper - box.lower) * torch.rand((500, *box.lower.shape),
                                                         generator=gen, dtype=F64)
    values = run_graph(graph, x.reshape(-1, 1, 6), keep_all=True)
    for name, v in values.items():
        if name not in fast.bounds:
            continue
        v = v.reshape(500, batch, -1)
        lo = fast.bounds[name].lower.reshape(1, batch, -1)
        hi = fast.bounds[name].upper.reshape(1, batch, -1)
        assert bool((v >= lo - 1e-9).all()) and bool((v <= hi + 1e-9).all()), name


def test_rows_constants_and_allowance():
    """The rows are s W[j], the constants s b[j] - delta[j] (one block per sign); values that
    are not a Linear node's output are left to the generic pass."""
    graph = random_mlp([4, 5, 2], seed=3)
    box = _boxes(3, 4, 2)
    inter = compute_intermediate(graph, box, method="ibp")
    inter.deltas["lin0"] = torch.arange(5, dtype=F64).reshape(1, 1, 5) * 1e-3
    idx = torch.tensor([[4, 1], [0, 2]])
    source, coef, const = linear_rows(inter, "lin0", idx, (1.0, -1.0))
    node = graph.node("lin0")
    w = torch.as_tensor(node.consts[1], dtype=F64)
    b = torch.as_tensor(node.consts[2], dtype=F64)
    assert source == "x" and coef.shape == (2, 4, 1, 4) and const.shape == (2, 4)
    for d in range(2):
        for k, j in enumerate(idx[d].tolist()):
            assert torch.equal(coef[d, k].reshape(-1), w[j])
            assert torch.equal(coef[d, 2 + k].reshape(-1), -w[j])
            assert const[d, k] == b[j] - j * 1e-3 and const[d, 2 + k] == -b[j] - j * 1e-3
    assert linear_rows(inter, "act0", idx, (1.0,)) is None
    assert linear_rows(inter, "x", idx, (1.0,)) is None
