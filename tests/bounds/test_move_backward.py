"""Direct backward steps of the data-movement and reduction ops (Transpose, ReduceSum,
ReduceMean, Slice, Gather, Concat, Pad, Expand, Tile, Resize, GlobalAveragePool; in
``bounds/rules/shape.py`` and ``pooling.py``): the numbers of autograd's VJP of the forward
(which the engine used before, through a zero forward; to the bit where nothing is added up
in another order), the zero forward's offset where constants enter, the same gradient through
them (alpha-CROWN's); bounds through them equal the VJP path's and enclose sampled outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph, Node, TensorInfo
from bounds.registry import rules
from bounds.types import Interval

F64 = torch.float64

CASES = [  # (op, input shape, output shape, attrs)
    ("Transpose", (1, 2, 3, 4), (1, 4, 2, 3), {"perm": (0, 3, 1, 2)}),
    ("Transpose", (1, 5, 3), (1, 3, 5), {"perm": (0, 2, 1)}),
    ("Transpose", (2, 3, 4, 5), (5, 3, 2, 4), {"perm": (3, 1, 0, 2)}),
    ("ReduceMean", (1, 3, 8), (1, 3, 1), {"axes": (2,), "keepdims": 1}),
    ("ReduceMean", (1, 2, 3, 4), (1, 4), {"axes": (1, 2), "keepdims": 0}),
    ("ReduceSum", (1, 2, 3, 4), (1, 2, 1, 1), {"axes": (2, 3), "keepdims": 1}),
    ("ReduceSum", (1, 6, 5), (1, 5), {"axes": (1,), "keepdims": 0}),
    ("Slice", (1, 4, 9), (1, 2, 4), {"axes": (1, 2), "starts": (1, 2), "ends": (3, 9),
                                     "steps": (1, 2)}),
    ("Slice", (1, 6, 5), (1, 3, 5), {"axes": (1,), "starts": (5,), "ends": (0,),
                                     "steps": (-2,)}),
    ("Gather", (1, 5, 4), (1, 6, 4), {"axis": 1}),
]
# the adjoints that add copies up, in another order than autograd: equal up to rounding
SPREAD_CASES = [
    ("Expand", (1, 1, 3, 1), (1, 4, 3, 5), {}),
    ("Tile", (1, 2, 3), (2, 2, 9), {"repeats": (2, 1, 3)}),
    ("Resize", (1, 2, 3), (1, 4, 6), {"indices": (None, (0, 0, 1, 1), (0, 0, 1, 1, 2, 2))}),
    ("GlobalAveragePool", (1, 3, 4, 5), (1, 3, 1, 1), {}),
]
GATHER_INDEX = torch.tensor([4, 0, 0, 2, 4, 1])  # repeats: their coefficients add up


def _consts(op):
    return [GATHER_INDEX] if op == "Gather" else []


def _vjp(rule, node, in_shape, coef):
    b, s = coef.shape[:2]
    x = torch.zeros((b * s, *in_shape), dtype=coef.dtype, requires_grad=True)
    out = rule.forward(node, [x, *_consts(node.op)])
    rows = coef.reshape(b * s, *node.shape)
    grad, = torch.autograd.grad((out * rows).sum(), [x], create_graph=coef.requires_grad)
    return grad.reshape(b, s, *in_shape)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("case", CASES + SPREAD_CASES, ids=lambda c: f"{c[0]}{c[1]}->{c[2]}")
def test_backward_is_the_vjp_and_so_is_its_gradient(case, dtype):
    op, in_shape, out_shape, attrs = case
    node = Node("n", op, ("x",), out_shape, attrs)
    rule = rules().get(op)
    g = torch.Generator().manual_seed(0)
    coef = torch.randn((2, 3, *out_shape), generator=g, dtype=dtype)
    x = torch.zeros((2, *in_shape), dtype=dtype)
    args = [Interval(x, x), *_consts(op)]
    coefs, offset = rule.backward(node, coef, args)
    assert offset is None and coefs[0].is_contiguous() and len(coefs) == len(args)
    ulps = 0.0 if case in CASES else 8 * torch.finfo(dtype).eps
    torch.testing.assert_close(coefs[0], _vjp(rule, node, in_shape, coef), rtol=ulps, atol=ulps)
    leaf = coef.clone().requires_grad_(True)
    weight = torch.randn((2, 3, *in_shape), generator=g, dtype=dtype)
    direct, = torch.autograd.grad((rule.backward(node, leaf, args)[0][0]
                                   * weight).sum(), [leaf])
    reference, = torch.autograd.grad((_vjp(rule, node, in_shape, leaf) * weight).sum(), [leaf])
    torch.testing.assert_close(direct, reference)


def _net() -> Graph:
    """x [1, 4, 6] -> Linear -> Transpose -> Tanh -> ReduceMean over the 4 -> Linear."""
    g = torch.Generator().manual_seed(3)
    w1 = torch.randn((6, 6), generator=g, dtype=F64).numpy()
    w2 = torch.randn((2, 6), generator=g, dtype=F64).numpy()
    nodes = (Node("a", "Linear", ("x", None, None), (1, 4, 6), {}, {1: w1, 2: w1[0] * 0}),
             Node("t", "Transpose", ("a",), (1, 6, 4), {"perm": (0, 2, 1)}),
             Node("h", "Tanh", ("t",), (1, 6, 4)),
             Node("m", "ReduceMean", ("h",), (1, 6), {"axes": (2,), "keepdims": 0}),
             Node("y", "Linear", ("m", None, None), (1, 2), {}, {1: w2, 2: w2[:, 0] * 0}))
    return Graph((TensorInfo("x", (1, 4, 6)),), (TensorInfo("y", (1, 2)),), nodes)


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_bounds_through_the_steps_equal_the_vjp_path(method, monkeypatch):
    graph = _net()
    box = Interval(-torch.ones(1, 1, 4, 6, dtype=F64), torch.ones(1, 1, 4, 6, dtype=F64))
    coef = torch.tensor([[[1.0, -1.0]]], dtype=F64)
    rhs = torch.zeros(1, 1, dtype=F64)
    options = BoundOptions(method=method, intermediate="crown")
    direct = bound_spec(graph, box, coef, rhs, options).lower
    registry = rules()
    for op in ("Transpose", "ReduceMean"):  # the engine's autograd path, as before
        monkeypatch.setitem(registry._entries, op, dataclasses.replace(registry.get(op),
                                                                       backward=None))
    reference = bound_spec(graph, box, coef, rhs, options).lower
    torch.testing.assert_close(direct, reference, rtol=1e-12, atol=1e-12)
    x = box.lower + (box.upper - box.lower) * torch.rand((500, 1, 4, 6), dtype=F64)
    y = run_graph(graph, x)[0].reshape(500, 2)
    assert bool((y[:, 0] - y[:, 1] >= direct.reshape(-1) - 1e-9).all())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_concat_step_is_the_vjp_with_the_constant_parts_offset(dtype):
    """Concat of two dynamic inputs around a constant block: each input's coefficients are
    autograd's VJP (to the bit), and the offset is A . f(0), the constant block's share."""
    g = torch.Generator().manual_seed(5)
    const = torch.randn((1, 2, 3), generator=g, dtype=dtype)
    node = Node("n", "Concat", ("a", None, "b"), (1, 7, 3), {"axis": 1}, {1: const.numpy()})
    rule = rules().get("Concat")
    coef = torch.randn((2, 4, 1, 7, 3), generator=g, dtype=dtype)
    args = [Interval(torch.zeros((2, 1, 1, 3), dtype=dtype), torch.zeros((2, 1, 1, 3),
                                                                          dtype=dtype)),
            const, Interval(torch.zeros((2, 1, 4, 3), dtype=dtype),
                            torch.zeros((2, 1, 4, 3), dtype=dtype))]
    coefs, offset = rule.backward(node, coef, args)
    assert coefs[1] is None and all(c.is_contiguous() for c in (coefs[0], coefs[2]))
    a = torch.zeros((8, 1, 1, 3), dtype=dtype, requires_grad=True)
    b = torch.zeros((8, 1, 4, 3), dtype=dtype, requires_grad=True)
    out = rule.forward(node, [a, const, b])
    grads = torch.autograd.grad((out * coef.reshape(8, 1, 7, 3)).sum(), [a, b])
    for got, want in zip((coefs[0], coefs[2]), grads, strict=True):
        torch.testing.assert_close(got, want.reshape(got.shape), rtol=0, atol=0)
    zero = out.detach()[:1]  # f(0): the constant block between zeros
    torch.testing.assert_close(offset, (coef * zero).flatten(2).sum(-1))


def test_slice_step_writes_the_slice_for_positive_steps():
    """Several axes, a step of 2, starts past 0: the strided copy is the index map's sum."""
    node = Node("n", "Slice", ("x",), (1, 2, 3), {"axes": (1, 2), "starts": (1, 1),
                                                   "ends": (5, 7), "steps": (2, 2)})
    coef = torch.randn((2, 3, 1, 2, 3), generator=torch.Generator().manual_seed(2), dtype=F64)
    x = torch.zeros((2, 1, 6, 8), dtype=F64)
    (direct,), offset = rules().get("Slice").backward(node, coef, [Interval(x, x)])
    reference = _vjp(rules().get("Slice"), node, (1, 6, 8), coef)
    assert offset is None
    torch.testing.assert_close(direct, reference, rtol=0, atol=0)


PAD_CASES = [  # (mode, pads over (C, H, W), value)
    ("constant", (0, 1, 2, 0, 2, 1), 0.0),
    ("constant", (0, 2, -1, 0, -1, 3), 1.5),  # negative pads crop
    ("reflect", (0, 2, 1, 0, 1, 2), 0.0),
    ("edge", (0, 1, 0, 0, 3, 2), 0.0),
    ("wrap", (0, 2, 3, 0, 1, 0), 0.0),
]


@pytest.mark.parametrize("case", PAD_CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_pad_step_is_the_vjp_with_the_fill_in_the_offset(case):
    mode, pads, value = case
    in_shape = (2, 4, 5)
    out_shape = tuple(n + pads[i] + pads[i + 3] for i, n in enumerate(in_shape))
    node = Node("n", "Pad", ("x",), out_shape, {"pads": pads, "mode": mode, "value": value})
    rule = rules().get("Pad")
    coef = torch.randn((2, 3, *out_shape), generator=torch.Generator().manual_seed(4),
                       dtype=F64)
    x = torch.zeros((2, *in_shape), dtype=F64)
    (direct,), offset = rule.backward(node, coef, [Interval(x, x)])
    # (constant mode copies, to the bit; the others add repeated reads in another order than
    # autograd's axis-by-axis index_select gradients)
    exact = {"rtol": 0, "atol": 0} if mode == "constant" else {"rtol": 1e-14, "atol": 1e-14}
    torch.testing.assert_close(direct, _vjp(rule, node, in_shape, coef), **exact)
    zero = rule.forward(node, [x[:1]])  # f(0): the fill where the pads add cells
    if value == 0.0:
        assert offset is None
    else:
        torch.testing.assert_close(offset, (coef * zero.unsqueeze(1)).flatten(2).sum(-1))

