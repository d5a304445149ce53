"""``box_dot``: bounds of a . x over a box as matrix products (centre and rounded-up radius)
enclose a . x at sampled points and at the box's extreme vertex, equal the ends' form up to
float64 rounding, and take the ends' form where an end is infinite."""

from __future__ import annotations

import math

import pytest
import torch

from bounds.engine.box_dot import box_lower, box_upper, centre_radius

F64 = torch.float64


def _ends_lower(a, lo, hi):
    lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
    return (a.clamp(min=0) * lo + a.clamp(max=0) * hi).flatten(2).sum(-1)


@pytest.mark.parametrize(("b_coef", "b_box"), [(3, 3), (3, 1), (1, 3)])
def test_bounds_enclose_samples_and_match_the_ends_form(b_coef, b_box):
    gen = torch.Generator().manual_seed(b_coef * 7 + b_box)
    shape = (2, 3, 4)
    a = torch.randn(b_coef, 5, *shape, generator=gen, dtype=F64)
    a[a.abs() < 0.3] = 0.0  # exact zeros, as after a dead Relu
    lo = torch.randn(b_box, *shape, generator=gen, dtype=F64)
    hi = lo + torch.rand(b_box, *shape, generator=gen, dtype=F64)
    lower, upper = box_lower(a, lo, hi), box_upper(a, lo, hi)
    b = max(b_coef, b_box)
    assert lower.shape == upper.shape == (b, 5)
    x = lo + (hi - lo) * torch.rand(200, b_box, *shape, generator=gen, dtype=F64)
    values = (a.unsqueeze(0) * x.unsqueeze(2)).flatten(3).sum(-1)  # [200, B, S]
    assert bool((values >= lower - 1e-12).all()) and bool((values <= upper + 1e-12).all())
    worst = torch.where(a > 0, lo.unsqueeze(1), hi.unsqueeze(1))  # the minimising vertex
    assert torch.allclose(lower, (a * worst).flatten(2).sum(-1), rtol=0, atol=1e-12)
    assert torch.allclose(lower, _ends_lower(a, lo, hi), rtol=0, atol=1e-12)
    assert torch.allclose(upper, -_ends_lower(-a, lo, hi), rtol=0, atol=1e-12)


def test_the_rounded_radius_covers_the_box_whatever_the_rounding():
    """fl((lo + hi) / 2) and fl(hi - c) round; [c - r, c + r] still holds [lo, hi] exactly
    (checked in exact rational arithmetic on ends chosen to round)."""
    from fractions import Fraction

    gen = torch.Generator().manual_seed(3)
    lo = torch.randn(2000, generator=gen, dtype=F64) * 10 ** torch.randint(
        -8, 8, (2000,), generator=gen).to(F64)
    hi = lo + torch.rand(2000, generator=gen, dtype=F64) * lo.abs() * 1e-15  # a few ulps wide
    hi[::3] = lo[::3]  # degenerate boxes
    c, r = centre_radius(lo, hi)
    for i in range(2000):
        ci, ri = Fraction(float(c[i])), Fraction(float(r[i]))
        assert ci - ri <= Fraction(float(lo[i])) and Fraction(float(hi[i])) <= ci + ri


def test_infinite_ends_take_the_ends_form():
    a = torch.tensor([[[1.0, 0.0, -2.0]]], dtype=F64)
    lo = torch.tensor([[0.0, -math.inf, -1.0]], dtype=F64)
    hi = torch.tensor([[1.0, math.inf, 3.0]], dtype=F64)
    assert box_lower(a, lo, hi).tolist() == [[-6.0]]  # 1 * 0 + 0 * (anything) - 2 * 3
    assert box_upper(a, lo, hi).tolist() == [[3.0]]  # 1 * 1 - 2 * -1
    a[0, 0, 0] = -1.0
    lo[0, 0] = -math.inf
    assert box_lower(a, lo, hi).tolist() == [[-7.0]]
    assert box_upper(a, lo, hi).tolist() == [[math.inf]]


def test_gradient_is_the_minimising_vertex():
    """The gradient alpha-CROWN follows: lo where a > 0, hi where a < 0, the centre at an
    exact zero (a subgradient of min over the box)."""
    a = torch.tensor([[[2.0, -1.0, 0.0]]], dtype=F64, requires_grad=True)
    lo = torch.tensor([[0.0, 1.0, 2.0]], dtype=F64)
    hi = torch.tensor([[1.0, 3.0, 4.0]], dtype=F64)
    box_lower(a, lo, hi).sum().backward()
    assert torch.allclose(a.grad, torch.tensor([[[0.0, 3.0, 3.0]]], dtype=F64))


@pytest.mark.parametrize("finite", [True, False])
def test_a_value_with_no_axes_of_its_own(finite):
    """Coefficients [B, S] of a scalar value per domain (a box [B]), as a window's boundary
    node may have (a ReduceMean to a scalar): the bounds are the ends' products, with an
    infinite end taken in the ends' form (campaign case 32:573 raised IndexError here)."""
    a = torch.tensor([[2.0, -3.0, 0.0], [-1.0, 0.5, 4.0]], dtype=F64)
    lo = torch.tensor([-1.0, 0.25], dtype=F64)
    hi = torch.tensor([2.0, 1.5 if finite else math.inf], dtype=F64)
    lower, upper = box_lower(a, lo, hi), box_upper(a, lo, hi)
    assert lower.shape == upper.shape == (2, 3)

    def end(coef, x):  # coef * x, 0 where coef is 0 (no 0 * inf)
        return torch.where(coef == 0, 0.0, coef * x)
    want_lo = torch.where(a > 0, end(a, lo[:, None]), end(a, hi[:, None]))
    want_hi = torch.where(a > 0, end(a, hi[:, None]), end(a, lo[:, None]))
    assert torch.equal(lower.isinf(), want_lo.isinf()) and torch.equal(upper.isinf(),
                                                                       want_hi.isinf())
    finite_lo, finite_hi = want_lo.isfinite(), want_hi.isfinite()
    assert torch.allclose(lower[finite_lo], want_lo[finite_lo], rtol=0, atol=1e-12)
    assert torch.allclose(upper[finite_hi], want_hi[finite_hi], rtol=0, atol=1e-12)


@pytest.mark.parametrize("side", [box_lower, box_upper])
def test_a_box_repeated_by_zero_strides_gives_the_bound_of_its_copies(side):
    """One region box for every domain (``expand``, as the Relu search builds it): the bound
    and the coefficients' gradient equal those of the box written out per domain, finite
    ends and infinite ones."""
    gen = torch.Generator().manual_seed(11)
    for infinite in (False, True):
        lo = torch.randn(1, 2, 3, generator=gen, dtype=F64)
        hi = lo + torch.rand(1, 2, 3, generator=gen, dtype=F64)
        if infinite:
            lo[0, 1, 2] = -math.inf
        a = torch.randn(4, 5, 2, 3, generator=gen, dtype=F64)
        got, want = a.clone().requires_grad_(), a.clone().requires_grad_()
        shared = side(got, lo.expand(4, 2, 3), hi.expand(4, 2, 3))
        copied = side(want, lo.repeat(4, 1, 1), hi.repeat(4, 1, 1))
        assert torch.allclose(shared, copied, rtol=1e-15, atol=1e-12, equal_nan=True)
        shared[torch.isfinite(shared)].sum().backward()
        copied[torch.isfinite(copied)].sum().backward()
        torch.testing.assert_close(got.grad, want.grad, rtol=0, atol=0, equal_nan=True)


def test_an_infinite_end_leaves_the_gradient_of_finite_rows_finite():
    """Rows whose coefficient takes the finite end of an unbounded input have a finite bound,
    and alpha-CROWN follows their gradient: it is that end (NaN before: the product with the
    infinite end that ``where`` did not choose)."""
    a = torch.tensor([[[-1.0, 2.0], [0.0, 2.0], [1.0, 2.0]]], dtype=F64, requires_grad=True)
    lo = torch.tensor([[-math.inf, 1.0]], dtype=F64)
    hi = torch.tensor([[3.0, 4.0]], dtype=F64)
    lower = box_lower(a, lo, hi)
    assert lower.tolist() == [[-1.0, 2.0, -math.inf]]
    lower[0, :2].sum().backward()
    assert a.grad.tolist() == [[[3.0, 1.0], [0.0, 1.0], [0.0, 0.0]]]
