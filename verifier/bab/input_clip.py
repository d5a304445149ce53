"""Shrinking input-split domains to the part where a violation is still possible.

CROWN's final pass gives, per spec row s, a linear function L_s(x) = a_s . x + c_s with
L_s(x) <= (row value - rhs) for every x in the domain's box. A violating point of disjunct d
makes all of d's rows <= rhs, so it lies in {x in box : L_s(x) <= 0 for every row s of d}. For
one row and one input dimension i that gives a_si x_i <= -c_s - sum_{j != i} min_box(a_sj x_j),
a bound on x_i alone. The domain becomes the bounding box of the union over its open disjuncts
of these clipped boxes: what is cut away is proved safe by the same bounds that would have been
used to refute the whole domain. (The idea is the "clip input domain" step of input-split
verifiers; the float64 arithmetic here is covered by an outward slack.)
"""

from __future__ import annotations

import torch

from bounds.types import box_min

# Relative slack for the float64 arithmetic of the clip (terms of a 1e-16 relative error each).
SLACK = 1e-12


concretize_min = box_min  # min over each box of a . x (the engine's helper)


def clip_boxes(lower: torch.Tensor, upper: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
               n_disjuncts: int, refuted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped boxes [N, d] (lower > upper somewhere: no violation is possible at all).

    ``a`` [N, S, d] and ``c`` [N, S] (S = n_disjuncts * rows, disjunct-major) define the lower
    bounds L_s; rows with c = -inf (padding, or nothing known) clip nothing. ``refuted``
    [N, D] marks disjuncts already proved impossible on the domain.
    """
    n, s, d = a.shape
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)  # [N, 1, d]
    terms = torch.minimum(a * lo, a * hi)  # [N, S, d]
    rest = terms.sum(-1, keepdim=True) - terms  # sum over the other dimensions
    scale = (c.abs().unsqueeze(-1) + (a.abs() * torch.maximum(lo.abs(), hi.abs())).sum(
        -1, keepdim=True))
    usable = torch.isfinite(c).unsqueeze(-1) & (a != 0)
    safe_a = torch.where(usable, a, torch.ones_like(a))
    bound = (-c.unsqueeze(-1) - rest) / safe_a
    slack = SLACK * (scale / safe_a.abs() + bound.abs())
    inf = float("inf")
    new_hi = torch.where(usable & (a > 0), bound + slack, inf)
    new_lo = torch.where(usable & (a < 0), bound - slack, -inf)
    new_hi = torch.nan_to_num(new_hi, nan=float("inf"))
    new_lo = torch.nan_to_num(new_lo, nan=-float("inf"))
    rows = s // n_disjuncts
    # Intersect over the rows of each disjunct, then with the domain's box.
    d_hi = torch.minimum(new_hi.reshape(n, n_disjuncts, rows, d).min(2).values, hi)
    d_lo = torch.maximum(new_lo.reshape(n, n_disjuncts, rows, d).max(2).values, lo)
    # Union over the open disjuncts (refuted ones contribute nothing).
    gone = refuted.unsqueeze(-1) | (d_lo > d_hi).any(-1, keepdim=True)
    union_lo = torch.where(gone, inf, d_lo).min(1).values
    union_hi = torch.where(gone, -inf, d_hi).max(1).values
    return union_lo, union_hi
