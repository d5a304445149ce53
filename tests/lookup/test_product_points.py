"""Branching points for products x * y: the midpoint rule against a fresh numerical optimisation
of the split volume (the engine's own McCormick planes), and the run-time rule's contract."""

from __future__ import annotations

import torch

from bounds.lookup.products import product_gap_volume, product_points, product_split_volume

F64 = torch.float64


def _cells(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Sampled ranges: sign-crossing and one-signed, wide and narrow, unequal widths."""
    gen = torch.Generator().manual_seed(seed)

    def rng(size):
        lo = torch.rand(size, generator=gen, dtype=F64) * 20 - 10
        width = 10 ** (torch.rand(size, generator=gen, dtype=F64) * 4 - 3)  # 1e-3 .. 10
        return lo, lo + width

    lx, ux = rng(n)
    ly, uy = rng(n)
    return lx, ux, ly, uy


def _optimise(lx, ux, ly, uy, coarse: int = 64, rounds: int = 4, fine: int = 17):
    """Best split fraction of x's interval by dense search and zooming (no unimodality
    assumed), per cell."""
    t = ((torch.arange(coarse, dtype=F64) + 0.5) / coarse).expand(len(lx), coarse)
    half = 1.0 / coarse
    best = None
    for _ in range(rounds + 1):
        cells = [v[:, None].expand_as(t).reshape(-1) for v in (lx, ux, ly, uy)]
        vol = product_split_volume(*cells, cells[0] + t.reshape(-1) * (cells[1] - cells[0]))
        vol = vol.reshape(t.shape)
        idx = vol.argmin(1)
        best = t.gather(1, idx[:, None])[:, 0]
        t = (best[:, None] + torch.linspace(-half, half, fine, dtype=F64)).clamp(1e-6, 1 - 1e-6)
        half = 2 * half / (fine - 1)
    return best


def test_volume_matches_the_closed_form():
    lx, ux, ly, uy = _cells(200, 0)
    vol = product_gap_volume(lx, ux, ly, uy)
    # default planes (t = 1/2): constant gap wx wy / 2 over an area wx wy
    assert torch.allclose(vol, (ux - lx) ** 2 * (uy - ly) ** 2 / 2, rtol=1e-6, atol=1e-12)


def test_optimal_split_is_the_midpoint_for_every_pair_of_ranges():
    """A fresh optimisation on 2000 sampled cells lands on the midpoint (to the search's
    resolution), and no sampled point beats the midpoint's volume."""
    lx, ux, ly, uy = _cells(2000, 1)
    t = _optimise(lx, ux, ly, uy)
    assert float((t - 0.5).abs().max()) < 1e-4
    mid = product_points(lx, ux)
    v_mid = product_split_volume(lx, ux, ly, uy, mid)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        s = torch.rand(len(lx), generator=gen, dtype=F64)
        v = product_split_volume(lx, ux, ly, uy, lx + s * (ux - lx))
        assert bool((v_mid <= v * (1 + 1e-9) + 1e-15).all())


def test_points_are_vectorised_and_strictly_inside():
    lo = torch.tensor([[-1.0, 0.0, 3.0], [2.0, -5.0, 1.0]])
    up = torch.tensor([[1.0, 1e-30, 3.5], [2.0, 5.0, float(torch.nextafter(
        torch.tensor(1.0), torch.tensor(2.0)))]])
    p = product_points(lo, up)
    assert p.shape == lo.shape and p.dtype == lo.dtype
    assert torch.equal(p[0], torch.tensor([0.0, 5e-31, 3.25]))
    assert float(p[1, 0]) == 2.0  # zero width: the midpoint
    fits = torch.nextafter(lo, up) < up  # some float strictly inside
    assert bool(((lo < p) & (p < up))[fits].all())
    assert not bool(fits[1, 2]) and float(lo[1, 2]) <= float(p[1, 2]) <= float(up[1, 2])
    x = torch.randn(4, 3, 5, dtype=F64)
    assert torch.allclose(product_points(x - 1, x + 3), x + 1)
