"""The Relu rule's upper planes, reused across alpha iterations on the same bounds
(bounds/rules/relu.py ``_cached_upper_plane``): the same planes as computed afresh, and bounds
changed in place, other views of them or other tensors never get stale planes."""

from __future__ import annotations

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
