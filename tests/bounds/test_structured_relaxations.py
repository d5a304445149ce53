"""Soundness of the multi-input and window relaxations used by CROWN's backward step:
MaxPool / ReduceMax (window max) and products of two perturbed values (Mul, Div, MatMul).

Property: for a random coefficient A (both signs) the backward step returns (C, b) with
A . f(x) >= sum_i C_i . x_i + b for every x in the box. We draw boxes per element from mixed
families (zero-width, tiny, sign-crossing, large magnitude, random; one-signed denominators for
Div), evaluate f with numpy in float64 at the box corners (random vertices), uniform points and
the two extreme corners, and check the inequality with the default planes and random alphas,
in float64 and float32. IBP must enclose the same values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.graph import Node
from bounds.registry import rules
from bounds.types import Interval

N_BOXES = 24
N_POINTS = 64
ULPS = 16.0


def _family_boxes(rng, shape, signed_away_from_zero=False):
    n = N_BOXES * math.prod(shape)
    fam = rng.integers(0, 5, n)
    p = rng.normal(size=n) * 10.0 ** rng.uniform(-2, 2, n)
    w = 10.0 ** rng.uniform(-3, 1, n)
    big = rng.uniform(-1e4, 1e4, n)
    lows = [p, p, -w, np.minimum(big, -big), p - w]
    highs = [p, p + 1e-7 * (1 + np.abs(p)), w * rng.uniform(0.1, 3, n), np.maximum(big, -big),
             p + rng.uniform(0, 2, n) * w]
    lo, hi = np.choose(fam, lows), np.choose(fam, highs)
    if signed_away_from_zero:
        mag_lo = 10.0 ** rng.uniform(-2, 2, n)
        mag_hi = mag_lo * (1 + 10.0 ** rng.uniform(-6, 1, n) * (fam > 0))
        sign = rng.choice([-1.0, 1.0], n)
        lo, hi = np.where(sign > 0, mag_lo, -mag_hi), np.where(sign > 0, mag_hi, -mag_lo)
    return lo.reshape(N_BOXES, *shape), hi.reshape(N_BOXES, *shape)


def _points(rng, lo, hi):
    t = rng.random((N_POINTS, *lo.shape))
    t[0], t[1] = 0.0, 1.0
    t[2:N_POINTS // 2] = t[2:N_POINTS // 2].round()
    return lo + t * (hi - lo)


def _pool_ref(x, kernel, strides, pads, dilations):
    """2-d max pool of x [N, C, H, W] with -inf padding (ONNX MaxPool semantics)."""
    x = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])],
               constant_values=-np.inf)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    return win.max(axis=(4, 5))


def _pool_attrs(kernel, strides, pads, dilations, extra=(0, 0)):
    return {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations,
            "extra": extra, "count_include_pad": 0}


CASES = {
    # label: (op, attrs, {pos: shape}, out_shape, numpy reference on the operand list)
    "MaxPool(2x2)": ("MaxPool", _pool_attrs((2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
                     {0: (1, 2, 4, 4)}, (1, 2, 2, 2),
                     lambda a: _pool_ref(a[0][:, 0], (2, 2), (2, 2), (0, 0, 0, 0),
                                         (1, 1))[:, None]),
    "MaxPool(pads,overlap)": ("MaxPool", _pool_attrs((3, 3), (2, 1), (1, 1, 1, 0), (1, 1)),
                              {0: (1, 2, 5, 4)}, (1, 2, 3, 3),
                              lambda a: _pool_ref(a[0][:, 0], (3, 3), (2, 1), (1, 1, 1, 0),
                                                  (1, 1))[:, None]),
    "MaxPool(ceil mode)": ("MaxPool", _pool_attrs((3, 2), (2, 2), (1, 0, 0, 1), (1, 1), (1, 0)),
                           {0: (1, 2, 5, 5)}, (1, 2, 3, 3),
                           # ceil mode: the extra end row is padding like the pads
                           lambda a: _pool_ref(a[0][:, 0], (3, 2), (2, 2), (1, 0, 1, 1),
                                               (1, 1))[:, None]),
    "MaxPool(dilation)": ("MaxPool", _pool_attrs((2, 2), (1, 1), (0, 0, 0, 0), (2, 2)),
                          {0: (1, 1, 5, 5)}, (1, 1, 3, 3),
                          lambda a: _pool_ref(a[0][:, 0], (2, 2), (1, 1), (0, 0, 0, 0),
                                              (2, 2))[:, None]),
    "ReduceMax(axis 1)": ("ReduceMax", {"axes": (1,), "keepdims": False}, {0: (3, 4, 2)}, (3, 2),
                          lambda a: a[0].max(axis=2)),
    "ReduceMax(axes 0,2 keep)": ("ReduceMax", {"axes": (0, 2), "keepdims": True},
                                 {0: (3, 4, 2)}, (1, 4, 1),
                                 lambda a: a[0].max(axis=(1, 3), keepdims=True)),
    "Mul(x,y)": ("Mul", {}, {0: (2, 3), 1: (2, 3)}, (2, 3), lambda a: a[0] * a[1]),
    "Mul(x,y broadcast)": ("Mul", {}, {0: (2, 3), 1: (1, 3)}, (2, 3), lambda a: a[0] * a[1]),
    "Div(x,y)": ("Div", {}, {0: (2, 3), 1: (2, 3)}, (2, 3), lambda a: a[0] / a[1]),
    "MatMul(a,b)": ("MatMul", {}, {0: (2, 3, 4), 1: (2, 4, 2)}, (2, 3, 2),
                    lambda a: np.matmul(a[0], a[1])),
    "MatMul(a,b broadcast)": ("MatMul", {}, {0: (1, 3, 2), 1: (2, 2, 3)}, (2, 3, 3),
                              lambda a: np.matmul(a[0], a[1])),
    # attention's shape: heads as a leading axis, a longer inner sum
    "MatMul(heads)": ("MatMul", {}, {0: (2, 4, 6), 1: (2, 6, 3)}, (2, 4, 3),
                      lambda a: np.matmul(a[0], a[1])),
}


def _node(op, attrs, operands, out_shape):
    inputs = tuple(f"x{p}" for p in sorted(operands))
    return Node("y", op, inputs, out_shape, dict(attrs))


def _draw(label, seed, dtype):
    op, attrs, operands, out_shape, ref = CASES[label]
    rng = np.random.default_rng(seed)
    boxes = [_family_boxes(rng, shape, op == "Div" and pos == 1)
             for pos, shape in sorted(operands.items())]
    boxes = [(lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64))
             for lo, hi in boxes]
    pts = [_points(rng, lo, hi) for lo, hi in boxes]  # [P, B, *shape] each
    flat = [p.reshape(N_POINTS * N_BOXES, *p.shape[2:]) for p in pts]
    values = ref(flat).reshape(N_POINTS, N_BOXES, *out_shape)
    intervals = [Interval(torch.as_tensor(lo, dtype=dtype), torch.as_tensor(hi, dtype=dtype))
                 for lo, hi in boxes]
    return rng, _node(op, attrs, operands, out_shape), intervals, pts, values


def _check_backward(label, node, intervals, pts, values, coef, alpha, dtype):
    rule = rules().get(node.op)
    kwargs = {} if alpha is None else {"alpha": alpha}
    coefs, offset = rule.backward(node, coef, intervals, **kwargs)
    assert coefs is not None, f"{label}: the rule declined finite bounds"
    c64 = coef.double()
    lhs = (c64.unsqueeze(0) * torch.as_tensor(values).unsqueeze(2)).flatten(3).sum(-1)
    rhs = offset.double().unsqueeze(0).expand_as(lhs).clone()
    scale = (c64.abs().unsqueeze(0) * torch.as_tensor(np.abs(values)).unsqueeze(2)).flatten(
        3).sum(-1) + offset.double().abs()
    for c, p in zip(coefs, pts, strict=True):
        term = c.double().unsqueeze(0) * torch.as_tensor(p).unsqueeze(2)
        rhs = rhs + term.flatten(3).sum(-1)
        scale = scale + term.abs().flatten(3).sum(-1)
    tol = ULPS * torch.finfo(dtype).eps * (scale + 1e-300)
    bad = lhs < rhs - tol
    assert not bool(bad.any()), (
        f"{label} ({dtype}, alpha={'yes' if alpha is not None else 'no'}): linear bound above "
        f"the value by {(rhs - lhs)[bad].max().item():.3g} at {bad.nonzero()[0].tolist()}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("label", list(CASES))
def test_backward_planes_bound_sampled_values(label, dtype):
    from bounds.engine.alpha import STRUCTURED_ALPHA_OPS

    rng, node, intervals, pts, values = _draw(label, 7, dtype)
    s = 5
    coef = torch.as_tensor(rng.normal(size=(N_BOXES, s, *node.shape)), dtype=dtype)
    coef[:, 0] = coef[:, 0].abs()  # a row that only uses lower planes, one only upper planes
    coef[:, 1] = -coef[:, 1].abs()
    _check_backward(label, node, intervals, pts, values, coef, None, dtype)
    init = STRUCTURED_ALPHA_OPS[node.op][0](node, intervals, s)
    assert init.shape[:2] == (N_BOXES, s)
    _check_backward(label, node, intervals, pts, values, coef, init, dtype)
    for k in range(2):
        alpha = torch.as_tensor(rng.random(init.shape), dtype=dtype)
        if k == 1:
            alpha = (alpha > 0.5).to(dtype)
        _check_backward(label, node, intervals, pts, values, coef, alpha, dtype)


@pytest.mark.parametrize("label", [k for k in CASES if CASES[k][0] == "MatMul"])
def test_matmul_default_planes_are_the_half_alpha_planes(label):
    """MatMul's default step (matrix products of the bound matrices) gives alpha = 1/2's
    coefficients, and its offset differs only by its wider rounding margin (a few ulps)."""
    from bounds.engine.alpha import STRUCTURED_ALPHA_OPS

    rng, node, intervals, _, _ = _draw(label, 11, torch.float64)
    coef = torch.as_tensor(rng.normal(size=(N_BOXES, 3, *node.shape)))
    rule = rules().get(node.op)
    fast, fast_offset = rule.backward(node, coef, intervals)
    half = STRUCTURED_ALPHA_OPS[node.op][0](node, intervals, 3)
    planes, offset = rule.backward(node, coef, intervals, alpha=half)
    for a, b in zip(fast, planes, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    scale = sum((c.abs() * i.lower.abs().maximum(i.upper.abs()).unsqueeze(1)).flatten(2).sum(-1)
                for c, i in zip(planes, intervals, strict=True)) + offset.abs()
    gap = offset - fast_offset
    assert bool((gap >= 0).all()) and bool((gap <= 1e-13 * scale).all())


@pytest.mark.parametrize("label", list(CASES))
def test_ibp_encloses_sampled_values(label):
    _, node, intervals, _, values = _draw(label, 8, torch.float64)
    out = rules().get(node.op).ibp(node, intervals)
    v = torch.as_tensor(values)
    tol = 1e-12 * (v.abs() + 1)
    assert torch.all(v >= out.lower - tol) and torch.all(v <= out.upper + tol)


@pytest.mark.parametrize("label", [k for k in CASES if CASES[k][0] in ("Mul", "MatMul")])
def test_alpha_gets_a_gradient(label):
    from bounds.engine.alpha import STRUCTURED_ALPHA_OPS

    rng, node, intervals, _, _ = _draw(label, 9, torch.float64)
    coef = torch.as_tensor(rng.normal(size=(N_BOXES, 2, *node.shape)))
    alpha = STRUCTURED_ALPHA_OPS[node.op][0](node, intervals, 2).clone().requires_grad_(True)
    _, offset = rules().get(node.op).backward(node, coef, intervals, alpha=alpha)
    offset.sum().backward()
    assert alpha.grad is not None and torch.isfinite(alpha.grad).all()


def test_window_max_is_exact_when_one_input_dominates():
    # window [x0, x1] with x0 in [5, 6] above x1 in [-1, 4]: max = x0, both planes exact
    node = Node("y", "ReduceMax", ("x",), (1,), {"axes": (0,), "keepdims": False})
    x = Interval(torch.tensor([[5.0, -1.0]], dtype=torch.float64),
                 torch.tensor([[6.0, 4.0]], dtype=torch.float64))
    coef = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    (c,), off = rules().get("ReduceMax").backward(node, coef, [x])
    assert torch.allclose(c, torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]], dtype=torch.float64))
    assert torch.allclose(off, torch.zeros(1, 2, dtype=torch.float64))


def test_window_max_upper_chord_by_hand():
    # x0 in [0, 4] (largest upper), x1 in [-1, 2]: y <= 2 + (4 - 2) / (4 - 0) (x0 - 0)
    node = Node("y", "ReduceMax", ("x",), (1,), {"axes": (0,), "keepdims": False})
    x = Interval(torch.tensor([[0.0, -1.0]], dtype=torch.float64),
                 torch.tensor([[4.0, 2.0]], dtype=torch.float64))
    coef = torch.tensor([[[-1.0]]], dtype=torch.float64)
    (c,), off = rules().get("ReduceMax").backward(node, coef, [x])
    assert torch.allclose(c, torch.tensor([[[-0.5, 0.0]]], dtype=torch.float64))
    assert abs(off.item() + 2.0) < 1e-12


def test_products_decline_unbounded_operands():
    node = Node("y", "Mul", ("a", "b"), (2,))
    inf = torch.tensor([[1.0, math.inf]], dtype=torch.float64)
    x = Interval(-inf, inf)
    coefs, off = rules().get("Mul").backward(node, torch.ones(1, 1, 2, dtype=torch.float64),
                                             [x, x])
    assert coefs is None and off is None


@pytest.mark.parametrize("seed", range(4))
def test_simplex_lower_is_the_lp_optimum(seed):
    """min c . y over {box, sum y = 1} by the greedy fill equals scipy's LP optimum, and is a
    lower bound at sampled softmax outputs inside the box."""
    from scipy.optimize import linprog

    from bounds.rules.softmax import simplex_lower

    rng = np.random.default_rng(seed)
    n, b, s = 5, 6, 3
    y0 = rng.dirichlet(np.ones(n), size=b)  # a simplex point inside every box
    lo = np.clip(y0 - rng.uniform(0, 0.4, (b, n)) * (rng.random((b, n)) < 0.8), 0, 1)
    hi = np.clip(y0 + rng.uniform(0, 0.4, (b, n)), 0, 1)
    lo[0], hi[0] = y0[0], y0[0]  # zero-width box
    coef = rng.normal(size=(b, s, n))
    box = Interval(torch.as_tensor(lo).reshape(b, 1, n), torch.as_tensor(hi).reshape(b, 1, n))
    got = simplex_lower(torch.as_tensor(coef).reshape(b, s, 1, n), box, axis=1)
    for i in range(b):
        for k in range(s):
            lp = linprog(coef[i, k], A_eq=np.ones((1, n)), b_eq=[1.0],
                         bounds=list(zip(lo[i], hi[i], strict=True)), method="highs")
            assert lp.status == 0
            assert abs(got[i, k].item() - lp.fun) < 1e-9 * (1 + abs(lp.fun))
    plain = (np.clip(coef, 0, None) * lo[:, None] + np.clip(coef, None, 0) * hi[:, None]).sum(-1)
    assert np.all(got.numpy() >= plain - 1e-12)


def test_simplex_lower_falls_back_off_the_simplex():
    from bounds.rules.softmax import simplex_lower

    box = Interval(torch.tensor([[[0.6, 0.6]]], dtype=torch.float64),
                   torch.tensor([[[0.9, 0.9]]], dtype=torch.float64))  # sum of lowers > 1
    coef = torch.tensor([[[[1.0, -1.0]]]], dtype=torch.float64)
    assert abs(simplex_lower(coef, box, axis=1).item() - (0.6 - 0.9)) < 1e-12


@pytest.mark.parametrize("label", [k for k in CASES if CASES[k][0] in ("MaxPool", "ReduceMax")])
def test_window_max_default_step_is_its_dense_form(label):
    """The default step's two cells per window (``max_relax.default_cells``) give the dense
    step's numbers at the one-hot lower plane that ``initial_alpha`` reproduces: the same
    coefficients and offsets, for one box shared by the rows' domains and for one per domain."""
    from bounds.engine.alpha import STRUCTURED_ALPHA_OPS

    rng, node, intervals, _, _ = _draw(label, 11, torch.float64)
    rule = rules().get(node.op)
    for boxes in (intervals, [Interval(i.lower[:1], i.upper[:1]) for i in intervals]):
        s = 4
        coef = torch.as_tensor(rng.normal(size=(N_BOXES, s, *node.shape)))
        init = STRUCTURED_ALPHA_OPS[node.op][0](node, boxes, s).expand(N_BOXES, -1, -1, -1)
        (sparse,), off = rule.backward(node, coef, boxes)
        (dense,), dense_off = rule.backward(node, coef, boxes, alpha=init)
        # (overlapping windows add their cells in another order: a few ulps of the sum)
        torch.testing.assert_close(sparse, dense, rtol=1e-15, atol=1e-15 * coef.abs().max())
        torch.testing.assert_close(off, dense_off, rtol=1e-15, atol=0)


def test_products_with_unbounded_operands_have_no_nan():
    """0 * inf is 0 between interval ends (an infinite end stands for unbounded reals): a 0/1
    flag times a quotient whose divisor may be 0 (cctsdb's IoU head) is [-inf, inf], a zero
    flag gives 0, and every end is the product's true infimum or supremum."""
    inf = float("inf")
    rule = rules().get("Mul")
    node = Node("y", "Mul", ("a", "b"), (4,))

    def iv(lo, hi):
        return Interval(torch.tensor([lo], dtype=torch.float64),
                        torch.tensor([hi], dtype=torch.float64))

    a = iv([0.0, 0.0, 2.0, -1.0], [1.0, 0.0, 3.0, 0.0])
    b = iv([-inf, -inf, 1.0, 5.0], [inf, inf, inf, inf])
    out = rule.ibp(node, [a, b])
    torch.testing.assert_close(out.lower, torch.tensor([[-inf, 0.0, 2.0, -inf]],
                                                       dtype=torch.float64))
    torch.testing.assert_close(out.upper, torch.tensor([[inf, 0.0, inf, 0.0]],
                                                       dtype=torch.float64))
    const = Node("y", "Mul", ("a", None), (4,), {}, {1: np.zeros(4)})
    zero = rule.ibp(const, [b, torch.zeros(4, dtype=torch.float64)])
    assert bool((zero.lower == 0).all()) and bool((zero.upper == 0).all())
    nan = rule.ibp(node, [iv([float("nan")] * 4, [1.0] * 4), b])  # NaN stays NaN
    assert bool(torch.isnan(nan.lower).all())


def test_spec_rows_over_unbounded_outputs_have_no_nan():
    """A spec row over an output unbounded on the side its coefficient does not read: the
    interval bound of the row is finite or -inf, never NaN (it was 1 * -inf + 0 * inf)."""
    from bounds.engine.spec_bounds import ibp_lower
    from bounds.rules.softmax import simplex_lower

    inf = float("inf")
    out = Interval(torch.tensor([[-inf, 2.0, 0.0]], dtype=torch.float64),
                   torch.tensor([[inf, 3.0, inf]], dtype=torch.float64))
    coef = torch.tensor([[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]],
                        dtype=torch.float64)
    torch.testing.assert_close(ibp_lower(out, coef),
                               torch.tensor([[2.0, -inf, -3.0]], dtype=torch.float64))
    simplex = simplex_lower(coef, Interval(out.lower, out.upper), 0)
    assert not bool(torch.isnan(simplex).any())
