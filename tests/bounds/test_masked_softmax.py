"""A causal attention mask as exporters write it (transformers' GPT-2: scores plus a constant
of float32's lowest value, -3.4e38, above the diagonal) through the expanded softmax
(``bounds.rules.softmax.expand_softmax``). The differences of a masked and an unmasked score
are 3.4e38: their Exp overflows to +inf (its interval's lower end was NaN: inf less a margin
of inf), the differences of two masked scores span [-4e32, 4e32] (their Exp's lower end went
to -inf with the generic allowance of an unbounded output), and a sum of the two was NaN, so
every masked output had the interval [0, 1] instead of 0, and the LayerNorm after the
attention lost its variance's lower bound (GPT-2 only attacked)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.ibp import ibp_bounds, widen
from bounds.engine.intermediate import compute_intermediate
from bounds.graph import Graph, Node, TensorInfo
from bounds.rules.softmax import expand_softmax
from bounds.types import Interval

N = 5
LOWEST = float(np.finfo(np.float32).min)


def _causal_softmax() -> Graph:
    """x [1, N, N] scores -> Softmax(x + mask) over the last axis, mask = LOWEST above the
    diagonal."""
    mask = np.triu(np.full((N, N), LOWEST, np.float32), k=1)[None]
    nodes = (Node("masked", "Add", ("x", None), (1, N, N), {}, {1: mask}),
             Node("p", "Softmax", ("masked",), (1, N, N), {"axis": 2}))
    return Graph((TensorInfo("x", (1, N, N)),), (TensorInfo("p", (1, N, N)),), nodes)


def _box(radius: float) -> Interval:
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn((1, N, N), generator=gen, dtype=torch.float64)
    return Interval((centre - radius).float().double(), (centre + radius).float().double())


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_masked_outputs_are_zero_and_the_rest_enclose_samples(method):
    graph = expand_softmax(_causal_softmax())
    box = _box(0.3)
    if method == "ibp":
        p = ibp_bounds(graph, box)["p"]
    else:
        p = compute_intermediate(graph, box, method="crown").bounds["p"]
    above = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)
    assert not bool(torch.isnan(p.lower).any() | torch.isnan(p.upper).any())
    assert float(p.upper[0, 0][above].max()) <= 1e-6
    assert float(p.lower[0, 0][~above].min()) > 0.0  # the unmasked ones stay positive
    gen = torch.Generator().manual_seed(1)
    t = torch.rand((200, 1, N, N), generator=gen, dtype=torch.float64)
    x = box.lower + (box.upper - box.lower) * t
    for dtype in (torch.float64, torch.float32):
        y = run_graph(_causal_softmax(), x.to(dtype))[0].to(torch.float64)
        assert bool((y >= p.lower - 1e-9).all() & (y <= p.upper + 1e-9).all()), dtype


def test_an_infinite_end_survives_the_rounding_allowance():
    inf = math.inf
    iv = widen(Interval(torch.tensor([inf, 0.0, -inf]), torch.tensor([inf, inf, -inf])),
               torch.tensor([inf, inf, inf]))
    assert iv.lower.tolist() == [inf, -inf, -inf]
    assert iv.upper.tolist() == [inf, inf, -inf]
