"""Branching points for products z = x * y of two perturbed values (GenBaB product splits).

The objective is the one of :mod:`bounds.lookup.objective` lifted to two dimensions: the volume
between the upper and lower planes that the engine uses for z (``bounds.rules.bilinear``,
default alpha t = t' = 1/2) over both halves of a split of x's interval at p,

    V(p) = vol([lx, p] x [ly, uy]) + vol([p, ux] x [ly, uy]),
    vol(box) = integral over the box of (upper plane - lower plane).

Why no table is needed: for any fixed plane weights (t, t'), mapping the box affinely onto the
unit square (x = lx + wx s, y = ly + wy r) turns x y into wx wy s r plus affine terms, and the
McCormick planes map onto the unit-square ones plus the same affine terms; so the gap is
wx wy g(s, r) with g independent of the box, and vol(box) = C wx^2 wy^2. Then
V(p) = C wy^2 ((p - lx)^2 + (ux - p)^2), smallest at the midpoint p = (lx + ux) / 2 for every
pair of ranges ([lx, ux], [ly, uy]). (For t = t' = 1/2 the gap is the constant wx wy / 2.)
``tests/lookup/test_product_points.py`` checks this against a fresh numerical optimisation of V
on sampled cells (sign-crossing, one-signed, wide and narrow, unequal widths) using the engine's
own planes, so a change to the relaxation that moved the optimum would fail there.

The run-time rule (:func:`product_points`) is therefore the midpoint, vectorised over the batch
and kept strictly inside (l, u) like every other branching point.
"""

from __future__ import annotations

import torch

from bounds.lookup.tables import strictly_inside
from bounds.rules.bilinear import product_planes
from bounds.types import Interval

F64 = torch.float64


def product_points(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Split points of product operands with intervals [lower, upper] (any shape): the
    midpoint, the optimum of the product split volume for every pair of ranges (see the module
    docstring); strictly inside (l, u) where a float fits."""
    lower, upper = lower.detach(), upper.detach()
    return strictly_inside(lower + (upper - lower) / 2, lower, upper)


def product_gap_volume(lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor,
                       uy: torch.Tensor) -> torch.Tensor:
    """Volume between the engine's upper and lower planes of x * y over [lx, ux] x [ly, uy]
    (1-d float64 tensors of cells). The planes are affine, so their gap's integral over the
    box is the gap at the box centre times the box's area."""
    lx, ux, ly, uy = (t.to(F64).reshape(-1, 1) for t in (lx, ux, ly, uy))
    n = lx.shape[0]
    coef = torch.tensor([1.0, -1.0], dtype=F64).reshape(1, 2, 1).expand(n, 2, 1)
    cx, cy, off = product_planes(coef, Interval(lx, ux), Interval(ly, uy))
    xc, yc = (lx + ux) / 2, (ly + uy) / 2
    # row 0: lower plane; row 1: -(upper plane)
    lower = cx[:, 0, 0] * xc[:, 0] + cy[:, 0, 0] * yc[:, 0] + off[:, 0]
    upper = -(cx[:, 1, 0] * xc[:, 0] + cy[:, 1, 0] * yc[:, 0] + off[:, 1])
    return (upper - lower) * ((ux - lx) * (uy - ly))[:, 0]


def product_split_volume(lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor,
                         uy: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Looseness of splitting x's interval at ``p``: the gap volume over both halves."""
    return product_gap_volume(lx, p, ly, uy) + product_gap_volume(p, ux, ly, uy)
