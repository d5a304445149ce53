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

from bounds.engine.batch_rows import one_row


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
        return _by_ends(a, upper, lower)
    return _centred(a, lower, upper, n, 1.0)


def _centred_form(lower: torch.Tensor, upper: torch.Tensor, n: int) -> bool:
    """Whether the box is finite with ``n`` entries per batch row (else the ends' form)."""
    lower, upper = one_row(lower), one_row(upper)
    return (lower.numel() == lower.shape[0] * n and bool(torch.isfinite(lower).all())
            and bool(torch.isfinite(upper).all()))


def _centred(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, n: int,
             side: float) -> torch.Tensor:
    centre, radius = centre_radius(one_row(lower), one_row(upper))
    if centre.shape[0] == 1:  # one box for every domain: one matrix-vector product per term
        rows = a.reshape(-1, n)
        return centred_bound(rows, centre.reshape(n), radius.reshape(n), side).reshape(
            a.shape[:2])
    # (reshape, not flatten(2): a value with no axes of its own has coefficients [B, S])
    return centred_bound(a.reshape(*a.shape[:2], n), centre.reshape(-1, n, 1),
                         radius.reshape(-1, n, 1), side).squeeze(-1)


def centred_bound(a: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
                  side: float = -1.0) -> torch.Tensor:
    """a . c + side |a| . r over the last axis of ``a`` [..., n] (side -1: the lower bound,
    +1: the upper), for ``centre_radius``'s c and r as matmul operands: [n] (one box for
    every row) or [B, n, 1]."""
    return torch.add(a @ centre, a.abs() @ radius, alpha=side)


def ends_terms(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """a_i lower_i where a_i > 0, a_i upper_i where a_i < 0, else 0 (operands aligned by
    broadcasting): the terms of min of a . x over a box with unbounded ends (no 0 * inf).
    Gradient in a: the chosen end where it is finite, 0 elsewhere (a product with an infinite
    end carries none: its 0 * inf in backward would be NaN, and alphas shared by rows with
    finite bounds would take it)."""
    end = torch.where(a > 0, lower, torch.where(a < 0, upper, 0.0))
    finite = torch.isfinite(end)
    return torch.where(finite, a * torch.where(finite, end, 0.0), a.detach() * end)


def _by_ends(a: torch.Tensor, for_positive: torch.Tensor, for_negative: torch.Tensor
             ) -> torch.Tensor:
    """sum of a_i times the end ``for_positive`` (a_i > 0) or ``for_negative`` (a_i < 0)."""
    terms = ends_terms(a, one_row(for_positive).unsqueeze(1), one_row(for_negative).unsqueeze(1))
    return terms.reshape(*terms.shape[:2], -1).sum(-1)  # (as in ``_centred``: [B, S] allowed)
