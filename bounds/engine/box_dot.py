"""Bounds of linear functions a . x over an input box, as matrix products.

min over x in [lo, hi] of a . x = a . c - |a| . r, with c the box's centre and r its radius:
two matrix-vector products reading the coefficients twice (a, then |a|), where the form
a+ . lo + a- . hi makes four passes over them and three temporaries of their size (on a
mnistfc 256x4 ReLU search that concretisation took half of the search's time).

Rounding: r is rounded up by one ulp, so [c - r, c + r] contains [lo, hi] whatever the
rounding of c and r (fl(hi - c) is within half an ulp of hi - c). The products' own float64
rounding is left to the engines' final margin (``rounding.final_margin``), as it was for the
form this replaces.
"""

from __future__ import annotations

import math

import torch


def centre_radius(lower: torch.Tensor, upper: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, r) with [c - r, c + r] containing [lower, upper] (finite ends)."""
    centre = (lower + upper) / 2
    radius = torch.maximum(upper - centre, centre - lower)
    return centre, torch.nextafter(radius, torch.full_like(radius, math.inf))


def box_lower(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Lower bound [B, S] of a . x over the box, for dense coefficients ``a`` [B, S, *shape]
    and a box [B or 1, *shape] (either batch may be 1)."""
    n = math.prod(a.shape[2:])
    if not _centred_form(lower, upper, n):
        return _by_ends(a, lower, upper)
    return _centred(a, lower, upper, n, -1.0)


def box_upper(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Upper bound [B, S] of a . x over the box (shapes as ``box_lower``)."""
    n = math.prod(a.shape[2:])
    if not _centred_form(lower, upper, n):
        return -_by_ends(-a, lower, upper)
    return _centred(a, lower, upper, n, 1.0)


def _centred_form(lower: torch.Tensor, upper: torch.Tensor, n: int) -> bool:
    """Whether the box is finite with ``n`` entries per batch row (else the ends' form)."""
    return (lower.numel() == lower.shape[0] * n and bool(torch.isfinite(lower).all())
            and bool(torch.isfinite(upper).all()))


def _centred(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, n: int,
             side: float) -> torch.Tensor:
    """a . c + side |a| . r ([B, S])."""
    centre, radius = centre_radius(lower, upper)
    flat = a.flatten(2)
    spread = flat.abs() @ radius.reshape(-1, n, 1)
    return torch.add(flat @ centre.reshape(-1, n, 1), spread, alpha=side).squeeze(-1)


def _by_ends(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """a+ . lower + a- . upper, skipping the 0 * inf products of an unbounded unused end."""
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
    if bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all()):
        return (a.clamp(min=0) * lo + a.clamp(max=0) * hi).flatten(2).sum(-1)
    terms = torch.where(a > 0, a * lo, torch.where(a < 0, a * hi, 0.0))
    return terms.flatten(2).sum(-1)
