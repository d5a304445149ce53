"""The Relu rule's upper planes, reused across alpha iterations on the same bounds
(bounds/rules/relu.py ``_cached_upper_plane``): the same planes as computed afresh, and bounds
changed in place, other views of them or other tensors never get stale planes."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import bounds.rules.relu as relu

F64 = torch.float64


def _fresh(lower, upper):
    return relu._upper_plane(lower, upper)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_cached_planes_equal_fresh_ones_and_follow_in_place_changes():
    g = torch.Generator().manual_seed(0)
    lower = torch.randn((3, 50), generator=g, dtype=F64)
    upper = lower + torch.rand((3, 50), generator=g, dtype=F64) * 2
    first = relu._cached_upper_plane(lower.unsqueeze(1), upper.unsqueeze(1))
    again = relu._cached_upper_plane(lower.unsqueeze(1), upper.unsqueeze(1))
    assert again is first  # reused
    assert _same(first, _fresh(lower.unsqueeze(1), upper.unsqueeze(1)))
    upper.add_(0.5)  # the bounds change in place: new planes
    changed = relu._cached_upper_plane(lower.unsqueeze(1), upper.unsqueeze(1))
    assert changed is not first
    assert _same(changed, _fresh(lower.unsqueeze(1), upper.unsqueeze(1)))
    part = relu._cached_upper_plane(lower[:, :10], upper[:, :10])  # another view
    assert _same(part, _fresh(lower[:, :10], upper[:, :10]))
    other_upper = upper.clone()
    other_upper[:, 0] += 1.0
    other = relu._cached_upper_plane(lower.unsqueeze(1), other_upper.unsqueeze(1))
    assert _same(other, _fresh(lower.unsqueeze(1), other_upper.unsqueeze(1)))


def test_relax_with_alpha_keeps_the_chord_and_uses_alpha_below():
    lower = torch.tensor([[-1.0, 0.5, -2.0, -0.5]], dtype=F64)
    upper = torch.tensor([[1.0, 2.0, -1.0, 1.5]], dtype=F64)
    for alpha in (torch.full_like(lower, 0.3), torch.full_like(lower, 0.9)):
        rel = relu.relu_relax(None, lower, upper, alpha)
        assert torch.equal(rel.lower_slope, torch.tensor([[alpha[0, 0], 1.0, 0.0,
                                                            alpha[0, 0]]], dtype=F64))
        x = lower + (upper - lower) * torch.linspace(0, 1, 101, dtype=F64).reshape(-1, 1, 1)
        y = torch.relu(x)
        assert bool((rel.upper_slope * x + rel.upper_offset >= y).all())
        assert bool((rel.lower_slope * x + rel.lower_offset <= y).all())


def test_carried_planes_equal_fresh_ones_of_the_rows_kept():
    g = torch.Generator().manual_seed(1)
    lower = torch.randn((6, 40), generator=g, dtype=F64)
    upper = lower + torch.rand((6, 40), generator=g, dtype=F64) * 2
    old = (lower.unsqueeze(1), upper.unsqueeze(1))
    full = relu._cached_upper_plane(*old)
    rows = torch.tensor([True, False, True, True, False, True])
    new_l, new_u = lower[rows], upper[rows]
    new = (new_l.unsqueeze(1), new_u.unsqueeze(1))
    assert relu.carry_planes(old, new, rows)
    carried = relu._cached_upper_plane(*new)
    assert all(c.shape[0] == 4 for c in carried)
    assert _same(carried, _fresh(*new))
    assert all(torch.equal(c, f[rows]) for c, f in zip(carried, full, strict=True))
    new_u.add_(0.25)  # changed after the carry: recomputed, never stale
    assert _same(relu._cached_upper_plane(*new), _fresh(*new))
    other = (lower.clone().unsqueeze(1), upper.clone().unsqueeze(1))  # nothing cached
    assert not relu.carry_planes(other, (new_l[:1].unsqueeze(1), new_u[:1].unsqueeze(1)),
                                 rows)


def _hard_bounds(dtype, n: int = 3000, seed: int = 0):
    """Sign-crossing bounds of every scale: ordinary, tiny (subnormal products), huge, slopes
    near 0, 1/2 and 1 (where 1 - s and the two terms round)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.pow(10.0, torch.empty(n, dtype=F64).uniform_(-40, 30, generator=g))
    lower = -torch.rand(n, generator=g, dtype=F64) * scale
    upper = torch.rand(n, generator=g, dtype=F64) * scale
    ratio = torch.pow(10.0, torch.empty(n, dtype=F64).uniform_(-8, 8, generator=g))
    upper[::3] = -lower[::3] * ratio[::3]  # slopes from ~0 to ~1
    upper[1::7] = -lower[1::7] * (1 + 1e-7 * torch.rand(len(upper[1::7]), generator=g,
                                                         dtype=F64))  # s near 1/2
    tiny = torch.finfo(dtype).tiny
    lower[2::11], upper[2::11] = -tiny * 3.5, tiny * 0.75  # subnormal products
    lower, upper = lower.to(dtype), upper.to(dtype)
    keep = (lower < 0) & (upper > 0)
    return lower[keep], upper[keep]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upper_plane_lies_above_relu_at_both_ends_exactly(dtype):
    """Zero tolerance: s x + b >= relu(x) at x = l and x = u in exact rational arithmetic
    (the plane is above relu on [l, u] iff at its ends), for the dtype's own s and b; and
    the lift stays small (a relative 8 units of roundoff plus the smallest normal)."""
    lower, upper = _hard_bounds(dtype)
    unstable, slope, offset = relu._upper_plane(lower, upper)
    assert bool(unstable.all()) and slope.dtype == offset.dtype == dtype
    assert bool(((slope >= 0) & (slope <= 1)).all())
    for s, b, lo, up in zip(slope.tolist(), offset.tolist(), lower.tolist(), upper.tolist(),
                            strict=True):
        s, b, lo, up = (Fraction(v) for v in (s, b, lo, up))
        assert s * lo + b >= 0 and s * up + b >= up
        exact = max(-s * lo, (1 - s) * up)
        info = torch.finfo(dtype)
        assert b <= exact * (1 + Fraction(8) * Fraction(info.eps)) + 2 * Fraction(info.tiny)
