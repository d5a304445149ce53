"""Rounding allowances of weighted nodes counted over their possibly nonzero products
(bounds/engine/rounding.py ``nonzero_terms``): the count per output is the brute-force count
of inputs whose interval is not [0, 0] times nonzero weights, the allowance shrinks with it
(and is unchanged where no input is exactly zero), and float32 evaluations of the node, in
torch's order and in sequential sums of shuffled terms, stay within it at sampled points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bounds.float32_upper as float32_upper
from bounds.engine import rounding
from bounds.engine.ibp import propagate_node
from bounds.graph import Graph, Node, TensorInfo
from bounds.registry import rules
from bounds.types import Interval
from tests.bounds.test_adjoint_precision import NODES

F64 = torch.float64


def _zeroed(node: Node, seed: int) -> Node:
    """``node`` with about a fifth of its weights exactly 0."""
    rng = np.random.default_rng(seed)
    w = np.array(node.consts[1], dtype=np.float32)
    w[rng.random(w.shape) < 0.2] = 0.0
    return Node(node.name, node.op, node.inputs, node.shape, node.attrs,
                {**node.consts, 1: w, 2: np.asarray(node.consts[2], dtype=np.float32)})


def _box(in_shape, seed: int, dead: float):
    """Boxes [3, *in_shape] with about ``dead`` of the positions exactly [0, 0] (post-Relu
    values proven inactive) and the rest [c - 0.5, c + 0.5] or [0, u]."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((3, *in_shape[1:]), generator=g, dtype=F64) * 4
    lower, upper = centre - 0.5, centre + 0.5
    half = torch.rand(lower.shape, generator=g, dtype=F64) < 0.3
    lower = torch.where(half, 0.0, lower)
    upper = torch.where(half, upper.abs() + 0.1, upper)
    zero = torch.rand(lower.shape, generator=g, dtype=F64) < dead
    return Interval(torch.where(zero, 0.0, lower), torch.where(zero, 0.0, upper)), zero


def _brute_counts(node: Node, rule, maybe: torch.Tensor) -> torch.Tensor:
    """Per output, the inputs with maybe-nonzero values that a nonzero weight reaches (the
    Jacobian's nonzeros: one weight per input-output pair in these ops)."""
    w = torch.as_tensor(node.consts[1], dtype=F64)
    b = torch.zeros(node.shape[1:2] if node.op != "Linear" else node.shape[-1:], dtype=F64)
    out = []
    for k in range(maybe.shape[0]):
        x0 = torch.zeros((1, *maybe.shape[1:]), dtype=F64)
        jac = torch.autograd.functional.jacobian(
            lambda x: rule.forward(node, [x, w, b]), x0).reshape(
                int(np.prod(node.shape)), -1)
        out.append(((jac != 0) & maybe[k].reshape(1, -1)).sum(1))
    return torch.stack(out).reshape(maybe.shape[0], *node.shape[1:]).to(F64)


@pytest.mark.parametrize("make", NODES)
@pytest.mark.parametrize("float32_counts,zero_weights", [(False, True), (True, True),
                                                         (False, False)])
def test_counts_are_the_nonzero_products(make, float32_counts, zero_weights, monkeypatch):
    """(Linear with no zero weight: the count per domain is a sum over its inputs.)"""
    if float32_counts:
        monkeypatch.setattr(rounding, "COUNT_FLOAT32_ELEMENTS", 0)
    node, in_shape = make()
    if zero_weights:
        node = _zeroed(node, 1)
    rule = rules().get(node.op)
    box, zero = _box(in_shape, 2, 0.4)
    args = [box, torch.as_tensor(node.consts[1], dtype=F64),
            torch.as_tensor(node.consts[2], dtype=F64)]
    n = rounding.reduction_length(node, in_shape)
    counts = rounding.nonzero_terms(node, rule, args, n)
    assert counts is not None and counts.dtype == F64
    brute = _brute_counts(node, rule, ~zero)
    assert torch.equal(counts.reshape(brute.shape), brute)
    assert int(counts.max()) <= n
    # no exactly-zero input: no count (every output may have all n products)
    full = Interval(box.lower - 1, box.upper + 1)
    assert rounding.nonzero_terms(node, rule, [full, *args[1:]], n) is None


def _jacobian(node: Node, in_shape) -> np.ndarray:
    """[outputs, inputs] weights of the node's linear part (one domain)."""
    rule = rules().get(node.op)
    w = torch.as_tensor(node.consts[1], dtype=F64)
    zero_b = torch.zeros_like(torch.as_tensor(node.consts[2], dtype=F64))
    return torch.autograd.functional.jacobian(
        lambda v: rule.forward(node, [v, w, zero_b]),
        torch.zeros((1, *in_shape[1:]), dtype=F64)).reshape(int(np.prod(node.shape)),
                                                            -1).numpy()


def _float32_sequential(node: Node, jac: np.ndarray, x: np.ndarray,
                        g: np.random.Generator) -> np.ndarray:
    """The node at ``x`` (one domain) in float32, each output summing its products and bias
    one after another in a random order (float32 rounding after every operation; the
    zero-weight products are exact zeros wherever they fall)."""
    bias = np.broadcast_to(np.asarray(node.consts[2], dtype=np.float32).reshape(
        (-1,) + (1,) * (len(node.shape) - 2)), node.shape[1:]).reshape(-1, 1)
    terms = np.concatenate([jac.astype(np.float32) * x.reshape(1, -1).astype(np.float32),
                            bias], 1)
    order = np.argsort(g.random(terms.shape), axis=1)
    terms = np.take_along_axis(terms, order, 1)
    acc = np.zeros(terms.shape[0], dtype=np.float32)
    for col in terms.T:
        acc = (acc + col).astype(np.float32)
    return acc.reshape(node.shape[1:])


@pytest.mark.parametrize("make", NODES)
def test_allowance_covers_float32_evaluations(make, monkeypatch):
    """With 40% of the inputs exactly 0: the allowance is below the uncounted one (strictly
    somewhere), and float32 evaluations at sampled points (torch's kernel, shuffled
    sequential sums) stay within it of the float64 value."""
    monkeypatch.setattr(float32_upper, "MIN_ELEMENTS", 0)
    node, in_shape = make()
    node = _zeroed(node, 3)
    graph = Graph((TensorInfo("x", in_shape),), (TensorInfo(node.name, node.shape),), (node,))
    box, _ = _box(in_shape, 4, 0.4)
    out, delta = propagate_node(graph, node, {"x": box}, torch.device("cpu"), F64)
    rule = rules().get(node.op)
    args = [box, *(torch.as_tensor(node.consts[i], dtype=F64) for i in (1, 2))]
    n = rounding.reduction_length(node, in_shape)
    abs_args = [torch.maximum(box.lower.abs(), box.upper.abs()), args[1].abs(), args[2].abs()]
    uncounted = rounding.gamma(n + 1) * rule.forward(node, abs_args)
    assert bool((delta <= uncounted * (1 + 1e-6)).all()) and bool((delta < uncounted).any())
    g = torch.Generator().manual_seed(5)
    order = np.random.default_rng(6)
    consts = args[1:]
    jac = _jacobian(node, in_shape)
    for _ in range(8):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, generator=g,
                                                            dtype=F64)
        x = x.float().double()  # the float32 network's input values
        y = rule.forward(node, [x, *consts])
        y32 = rule.forward(node, [x.float(), *(c.float() for c in consts)]).to(F64)
        seq = torch.as_tensor(np.stack([_float32_sequential(node, jac, x[k].numpy(), order)
                                        for k in range(x.shape[0])])).to(F64).reshape(y.shape)
        for value in (y32, seq):
            assert bool(((value - y).abs() <= delta).all())
            assert bool((value >= out.lower).all() and (value <= out.upper).all())


def test_worst_case_sum_stays_within_the_counted_allowance():
    """A sum built to round at every step (1 + many u-sized terms, summed one by one) with
    most inputs exactly 0: the error uses up a large share of gamma(m + 1) (|W| |x| + |b|)
    for the m nonzero products, and stays within it."""
    m, dead = 64, 192
    node = Node("lin", "Linear", ("x", None, None), (1, 1), {},
                {1: np.ones((1, m + dead), dtype=np.float32),
                 2: np.zeros(1, dtype=np.float32)})
    u = 2.0**-24
    value = torch.cat([torch.tensor([1.0], dtype=F64),
                       torch.full((m - 1,), u * 0.999, dtype=F64),
                       torch.zeros(dead, dtype=F64)]).reshape(1, -1)
    box = Interval(value, value)
    graph = Graph((TensorInfo("x", (1, m + dead)),), (TensorInfo("lin", (1, 1)),), (node,))
    _, delta = propagate_node(graph, node, {"x": box}, torch.device("cpu"), F64)
    acc = np.float32(0.0)
    for v in value.reshape(-1).numpy().astype(np.float32):
        acc = np.float32(acc + v)
    error = abs(float(acc) - float(value.sum()))
    assert error <= float(delta)
    assert error > 0.2 * float(delta)  # the counted bound is near-tight here
    assert float(delta) < 0.3 * rounding.gamma(m + dead + 1) * float(value.sum())
