"""ScatterWindow (bounds/rules/scatter.py): IBP and the CROWN step enclose the values at points
sampled in the box, starts included (windows reaching past the axis too); exact when the
starts' floors are fixed; negative starts are refused; the engines (IBP, CROWN, alpha-CROWN)
stay sound on a small network that pastes a patch at input positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Node
from bounds.registry import UnsupportedOpError, rules
from bounds.types import Interval
from tests.bounds.test_dynamic_slice import _points
from tests.onnx_import.test_scatter_window import N_DATA, N_IN, C, H, load, window_model

F64 = torch.float64
SHAPE = (3, 4, 5)
ATTRS = {"axes": (0, 1), "first": (0, 1), "last": (1, 2)}  # rows p0..p0+1, cols p1+1..p1+2
RULE = rules().get("ScatterWindow")


def _mask(rng) -> np.ndarray:
    return (rng.random(SHAPE) < 0.8).astype(np.float64)


def _node(mask: np.ndarray, const_data=None, const_upd=None) -> Node:
    consts = {3: mask}
    inputs = ["data", "upd", "start", None]
    for pos, value in ((0, const_data), (1, const_upd)):
        if value is not None:
            consts[pos], inputs[pos] = value, None
    return Node("y", "ScatterWindow", tuple(inputs), SHAPE, dict(ATTRS), consts)


def _start_box(rng, batch: int, fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Real start intervals [B, 2] whose floors run from 0 to past the axes' ends."""
    a = rng.integers(0, [4, 6], (batch, 2)).astype(np.float64)
    c = a if fixed else a + rng.integers(0, 3, (batch, 2))
    lo, hi = a + rng.uniform(0, 0.5, a.shape), c + rng.uniform(0.5, 0.99, c.shape)
    return torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64)


def _box(rng, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    mid = torch.tensor(rng.normal(size=(batch, *SHAPE)), dtype=F64)
    rad = torch.tensor(rng.uniform(0, 0.5, (batch, *SHAPE)), dtype=F64)
    return mid - rad, mid + rad


@pytest.mark.parametrize("fixed", [False, True], ids=["range", "fixed"])
@pytest.mark.parametrize("const", ["none", "data", "updates", "both"])
def test_ibp_and_backward_enclose_sampled_points(fixed, const):
    """(both constant: only the starts move the output, and the step concretises it)"""
    rng = np.random.default_rng(11 + fixed + 3 * len(const))
    batch, n_spec = 8, 3
    s_lo, s_hi = _start_box(rng, batch, fixed)
    boxes = [_box(rng, batch), _box(rng, batch)]
    mask = _mask(rng)
    const_at = {"none": (), "data": (0,), "updates": (1,), "both": (0, 1)}[const]
    values = [torch.tensor(rng.normal(size=SHAPE), dtype=F64) for _ in range(2)]
    node = _node(mask, values[0].numpy() if 0 in const_at else None,
                 values[1].numpy() if 1 in const_at else None)
    args = [values[pos] if pos in const_at else Interval(*boxes[pos]) for pos in (0, 1)]
    args += [Interval(s_lo, s_hi), torch.tensor(mask)]
    box = RULE.ibp(node, args)
    coef = torch.tensor(rng.normal(size=(batch, n_spec, *SHAPE)), dtype=F64)
    coefs, offset = RULE.backward(node, coef, args)
    assert coefs[2] is None and coefs[3] is None
    assert all(coefs[pos] is None for pos in const_at)
    samples = [_points(rng, *boxes[0], 40), _points(rng, *boxes[1], 40),
               _points(rng, s_lo, s_hi, 40)]
    for d, u, s in zip(*samples, strict=True):
        ins = [values[pos] if pos in const_at else x for pos, x in ((0, d), (1, u))]
        y = RULE.forward(node, [*ins, s, torch.tensor(mask)])
        assert torch.isfinite(y).all()
        assert (box.lower <= y).all() and (y <= box.upper).all()
        linear = (coef * y.unsqueeze(1)).flatten(2).sum(-1)
        bound = offset.clone()
        for pos, x in ((0, d), (1, u)):
            if coefs[pos] is not None:
                bound = bound + (coefs[pos] * x.unsqueeze(1)).flatten(2).sum(-1)
        assert (bound <= linear + 1e-9).all()
        if fixed:  # fixed floors: the step is the exact linear map
            torch.testing.assert_close(bound, linear)


def test_ibp_is_exact_for_fixed_starts_and_the_hull_otherwise():
    """One axis of 6, window 0..1 past floor(s), data [0, 1], updates [5, 6], all in the mask."""
    node = Node("y", "ScatterWindow", ("d", "u", "s", None), (6,),
                {"axes": (0,), "first": (0,), "last": (1,)}, {3: np.ones(6)})
    d = Interval(torch.zeros((2, 6), dtype=F64), torch.ones((2, 6), dtype=F64))
    u = Interval(torch.full((2, 6), 5.0, dtype=F64), torch.full((2, 6), 6.0, dtype=F64))
    s = Interval(torch.tensor([[2.0], [1.5]], dtype=F64), torch.tensor([[2.9], [3.2]],
                                                                       dtype=F64))
    box = RULE.ibp(node, [d, u, s, torch.ones(6, dtype=F64)])
    assert box.lower.tolist() == [[0, 0, 5, 5, 0, 0], [0, 0, 0, 0, 0, 0]]  # floors 1..3: none sure
    assert box.upper.tolist() == [[1, 1, 6, 6, 1, 1], [1, 6, 6, 6, 6, 1]]


def test_negative_starts_are_refused_and_nan_forward():
    node = Node("y", "ScatterWindow", ("d", "u", "s", None), (4,),
                {"axes": (0,), "first": (0,), "last": (0,)}, {3: np.ones(4)})
    d = torch.zeros((1, 4), dtype=F64)
    one = torch.ones(4, dtype=F64)
    s = Interval(torch.tensor([[-0.5]], dtype=F64), torch.tensor([[2.0]], dtype=F64))
    with pytest.raises(UnsupportedOpError, match="negative"):
        RULE.ibp(node, [Interval(d, d), Interval(d + 1, d + 1), s, one])
    y = RULE.forward(node, [d, d + 1, torch.tensor([[-1.0], [0.0], [4.0]], dtype=F64), one])
    assert torch.isnan(y[0]).all()
    assert y[1:].tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
@pytest.mark.parametrize("into", ["mask", "image"])
@pytest.mark.parametrize("fixed", [False, True], ids=["range", "fixed"])
def test_engines_enclose_the_network_on_sampled_points(method, into, fixed):
    graph = load(window_model(2, into)).graph
    rng = np.random.default_rng(5)
    batch, n_out, n_spec = 4, N_DATA, 3
    lo = rng.uniform(-1.0, 0.5, (batch, N_IN))
    hi = lo + rng.uniform(0.0, 0.5, (batch, N_IN))
    a = rng.integers(0, [C + 1, H + 1], (batch, 2)).astype(np.float64)
    c = a if fixed else a + rng.integers(0, 3, (batch, 2))
    lo[:, N_DATA:], hi[:, N_DATA:] = a, c + 0.99  # Cast truncates: floors a..c
    box = Interval(torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64))
    coef = torch.tensor(rng.normal(size=(batch, n_spec, n_out)), dtype=F64)
    res = bound_spec(graph, box, coef, torch.zeros((1, n_spec), dtype=F64),
                     BoundOptions(method=method, intermediate="crown", alpha_iterations=5))
    assert torch.isfinite(res.lower).all()
    for x in _points(rng, box.lower, box.upper, 64):
        y = run_graph(graph, x)[0]
        value = (coef * y.reshape(batch, 1, n_out)).sum(-1)
        assert (res.lower <= value + 1e-6).all(), (res.lower, value)
