"""The S-shaped curves' alpha planes (``s_shaped.alpha_planes``, alpha-CROWN's inner loop): sound
against a scipy reference at sampled points of every kind of interval, the same planes as the
generic ``tangents.relax_curve`` up to their stated allowance, the same gradient, and the
generic path where they do not apply."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch

from bounds.rules.s_shaped import CURVES, DERIVATIVE_ERR, alpha_planes
from bounds.rules.tangents import relax_curve

F64 = torch.float64
OPS = ("Sigmoid", "Tanh", "Atan", "Erf")
REFERENCE = {"Sigmoid": scipy.special.expit, "Tanh": np.tanh, "Atan": np.arctan,
             "Erf": scipy.special.erf}


def _intervals(seed: int, dtype: torch.dtype, n: int = 240):
    """[B=n, 1, 1] interval ends of every kind: tiny, zero width, sign-crossing, convex or
    concave side only, saturated, wide, and large magnitudes."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=n) * rng.choice([0.1, 2.0, 8.0, 40.0], size=n)
    width = rng.choice([0.0, 1e-9, 1e-3, 0.5, 4.0, 30.0], size=n) * rng.random(n)
    lo = torch.as_tensor(centre - width, dtype=dtype).reshape(n, 1, 1)
    hi = torch.as_tensor(centre + width, dtype=dtype).reshape(n, 1, 1)
    return lo, hi


def _alphas(seed: int, n: int, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """[n, rows, 1] alphas: random, the ends 0 and 1, and out of range (clamped)."""
    rng = np.random.default_rng(seed + 1)
    a = rng.random((n, rows, 1))
    a[:, 0], a[:, 1] = 0.0, 1.0
    a[:, 2] = rng.choice([-0.5, 1.5], size=(n, 1))
    return torch.as_tensor(a, dtype=dtype)


def _points(lo: torch.Tensor, hi: torch.Tensor, alpha: torch.Tensor, k: int = 64):
    """[n, rows, P] points in each interval: uniform, the ends, the tangent points +-d."""
    l64, h64 = lo.to(F64), hi.to(F64)
    rng = np.random.default_rng(7)
    u = torch.as_tensor(rng.random((lo.shape[0], 1, k)), dtype=F64)
    d = l64 + alpha.to(F64).clamp(0, 1) * (h64 - l64)
    pts = torch.cat([l64 + u * (h64 - l64), l64.expand(-1, 1, 1), h64.expand(-1, 1, 1)], -1)
    pts = pts.expand(-1, alpha.shape[1], -1)
    pts = torch.cat([pts, d, -d], -1)
    return torch.minimum(torch.maximum(pts, l64), h64)


def _planes_hold(op: str, rel, x: torch.Tensor) -> None:
    y = torch.as_tensor(REFERENCE[op](x.numpy()), dtype=F64)
    planes = [t.to(F64) for t in (rel.lower_slope, rel.lower_offset,
                                  rel.upper_slope, rel.upper_offset)]
    lo = planes[0] * x + planes[1]
    hi = planes[2] * x + planes[3]
    # float64 evaluation of the planes and the reference: two ulps of the terms
    tol = 2 * torch.finfo(F64).eps * (y.abs() + (planes[0] * x).abs() + planes[1].abs()
                                      + (planes[2] * x).abs() + planes[3].abs())
    assert bool((lo <= y + tol).all()), f"{op}: lower plane above the curve by " \
        f"{float((lo - y).max()):.3g}"
    assert bool((hi >= y - tol).all()), f"{op}: upper plane below the curve by " \
        f"{float((y - hi).max()):.3g}"


@pytest.mark.parametrize("dtype", (torch.float32, F64), ids=str)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("seed", range(3))
def test_alpha_planes_enclose_reference(op, dtype, seed):
    lo, hi = _intervals(seed, dtype)
    alpha = _alphas(seed, lo.shape[0], 6, dtype)
    rel = alpha_planes(op, op, lo, hi, alpha)
    assert rel is not None
    for t in (rel.lower_slope, rel.lower_offset, rel.upper_slope, rel.upper_offset):
        assert t.dtype == dtype and bool(torch.isfinite(t).all())
    _planes_hold(op, rel, _points(lo, hi, alpha))


@pytest.mark.parametrize("op", OPS)
def test_alpha_planes_match_the_generic_planes(op):
    """Planes as tight as ``relax_curve``'s: at both ends of every interval (planes are linear)
    the lower plane is at most the stated allowance (DERIVATIVE_ERR (u - l) plus a few
    margins' worth) below, the upper plane at most that above; the same slopes where the
    interval is not tiny (the chord of a tiny one comes from its ends, not f' at the middle)."""
    lo, hi = _intervals(5, F64)
    alpha = _alphas(5, lo.shape[0], 6, F64)
    fast = alpha_planes(op, op, lo, hi, alpha)
    slow = relax_curve(CURVES[op], op, lo, hi, alpha)
    width = (hi - lo).expand_as(alpha)
    mag = torch.maximum(lo.abs(), hi.abs()).expand_as(alpha)
    eps = torch.finfo(F64).eps
    allowance = DERIVATIVE_ERR * width + 40 * eps * (1 + mag)
    wide = width > 1e-6
    for f, s in ((fast.lower_slope, slow.lower_slope), (fast.upper_slope, slow.upper_slope)):
        f, s = f.expand_as(alpha), s.expand_as(alpha)
        assert torch.allclose(f[wide], s[wide], rtol=1e-12, atol=1e-15)
    for x in (lo, hi):
        low_f = fast.lower_slope * x + fast.lower_offset
        low_s = slow.lower_slope * x + slow.lower_offset
        up_f = fast.upper_slope * x + fast.upper_offset
        up_s = slow.upper_slope * x + slow.upper_offset
        assert bool((low_s - low_f <= allowance).all()), float((low_s - low_f).max())
        assert bool((up_f - up_s <= allowance).all()), float((up_f - up_s).max())


@pytest.mark.parametrize("op", OPS)
def test_alpha_planes_gradient(op):
    """The envelope-theorem gradient equals autograd's through the generic planes."""
    lo, hi = _intervals(9, F64, n=64)
    lo, hi = lo.reshape(1, 1, 64), hi.reshape(1, 1, 64)
    start = torch.rand((1, 5, 64), dtype=F64, generator=torch.Generator().manual_seed(3))
    weights = torch.randn((4, 1, 5, 64), dtype=F64, generator=torch.Generator().manual_seed(4))
    grads = []
    for fn in (lambda a: alpha_planes(op, op, lo, hi, a),
               lambda a: relax_curve(CURVES[op], op, lo, hi, a)):
        a = start.clone().requires_grad_(True)
        rel = fn(a)
        parts = (rel.lower_slope, rel.lower_offset, rel.upper_slope, rel.upper_offset)
        sum((w * p).sum() for w, p in zip(weights, parts, strict=True)).backward()
        grads.append(a.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-10)


def test_alpha_planes_gradcheck():
    lo = torch.tensor([[[-3.0, -0.5, 0.2, -6.0]]], dtype=F64)
    hi = torch.tensor([[[-1.0, 2.5, 4.0, 7.0]]], dtype=F64)
    alpha = torch.tensor([[[0.3, 0.6, 0.2, 0.45]] * 2], dtype=F64).requires_grad_(True)

    def planes(a):
        rel = alpha_planes("Sigmoid", "s", lo, hi, a)
        return rel.lower_slope, rel.lower_offset, rel.upper_slope, rel.upper_offset

    # (the margins depend on the slope but carry no gradient: 1e-14 of it)
    assert torch.autograd.gradcheck(planes, (alpha,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("ends", [(-float("inf"), 1.0), (-1.0, float("inf")),
                                  (-1e308, 1e308)])
def test_unbounded_or_huge_ends_take_the_generic_path(ends):
    lo = torch.tensor([[ends[0], -1.0]], dtype=F64)
    hi = torch.tensor([[ends[1], 1.0]], dtype=F64)
    assert alpha_planes("Sigmoid", "s", lo, hi, torch.full_like(lo, 0.5)) is None


def test_huge_float32_ends_take_the_generic_path():
    lo = torch.tensor([[-3e38, -1.0]], dtype=torch.float32)
    hi = torch.tensor([[1.0, 1.0]], dtype=torch.float32)
    assert alpha_planes("Tanh", "t", lo, hi, torch.full_like(lo, 0.5)) is None


def test_an_alpha_that_is_not_a_number_takes_the_generic_path():
    lo = torch.tensor([[-2.0, -1.0]], dtype=F64)
    hi = torch.tensor([[1.0, 3.0]], dtype=F64)
    alpha = torch.tensor([[0.5, float("nan")]], dtype=F64)
    assert alpha_planes("Sigmoid", "s", lo, hi, alpha) is None
    assert alpha_planes("Sigmoid", "s", lo, hi, torch.tensor([[0.5, float("inf")]],
                                                              dtype=F64)) is not None
