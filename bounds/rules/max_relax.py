"""Linear relaxation of y = max_k x_k over windows (MaxPool, ReduceMax), for CROWN's backward.

Per window with input bounds l_k <= x_k <= u_k (padding cells: l = u = -inf, never the max):

* lower plane: y >= sum_k lam_k x_k for any lam in the simplex, since y >= x_k for every k.
  Default: lam = one-hot at the largest l_k; alpha-CROWN optimises lam (alpha >= 0, normalised).
* upper plane: take j = argmax u_k and m = max_{k != j} u_k. Then y <= max(x_j, m), and
  max(x_j, m) is convex in x_j on [l_j, u_j], so it lies below its chord:
  y <= m + s (x_j - l_j), s = (u_j - m) / (u_j - l_j) when l_j < m; y <= x_j when m <= l_j
  (then x_j dominates every other input and both planes are exactly x_j).
  The chord is never above the constant bound max_k u_k = u_j on [l_j, u_j].
Offsets get an outward margin of a few ulps for the float64 arithmetic that forms them.
"""

from __future__ import annotations

import torch

MARGIN_ULPS = 8.0


def _margin(offset: torch.Tensor, slope: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(offset.dtype).eps
    return MARGIN_ULPS * eps * (offset.abs() + slope.abs() * mag)


def upper_plane(lower: torch.Tensor, upper: torch.Tensor):
    """(index j [.., R], slope s [.., R], offset b [.., R]) with y <= s x_j + b per window.

    ``lower``/``upper``: window bounds [..., R, K] (padding cells -inf).
    """
    top2 = upper.topk(min(2, upper.shape[-1]), dim=-1)
    j = top2.indices[..., 0]
    u = top2.values[..., 0]
    m = top2.values[..., 1] if upper.shape[-1] > 1 else torch.full_like(u, -torch.inf)
    l = lower.gather(-1, j.unsqueeze(-1)).squeeze(-1)
    exact = m <= l  # also covers m = -inf (a single live cell) and zero-width x_j
    width = torch.where(exact, torch.ones_like(u), u - l)
    slope = torch.where(exact, torch.ones_like(u), (u - m) / width)
    m_safe = torch.where(exact, torch.zeros_like(m), m)
    l_safe = torch.where(exact, torch.zeros_like(l), l)
    offset = torch.where(exact, torch.zeros_like(u), m_safe - slope * l_safe)
    mag = torch.maximum(l_safe.abs(), u.abs())
    offset = offset + torch.where(exact, torch.zeros_like(u), _margin(offset, slope, mag))
    return j, slope, offset


def lower_weights(lower: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Convex weights lam [..., R, K] (or [B, S, R, K] with alpha) of the lower plane.

    Without alpha: one-hot at the largest lower bound. With alpha [B, S, R, K] (clamped to
    [0, 1]): alpha on the live cells, normalised to sum 1 (one-hot fallback if all zero).
    """
    live = torch.isfinite(lower) | (lower > 0)
    onehot = torch.zeros_like(lower)
    onehot.scatter_(-1, lower.argmax(-1, keepdim=True), 1.0)
    if alpha is None:
        return onehot
    a = alpha.clamp(0.0, 1.0) * live.unsqueeze(1).to(alpha.dtype)
    total = a.sum(-1, keepdim=True)
    ok = total > 1e-12
    return torch.where(ok, a / torch.where(ok, total, torch.ones_like(total)),
                       onehot.unsqueeze(1).expand_as(a))


def max_backward(coef: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 alpha: torch.Tensor | None = None):
    """Backward step through y_r = max_k x_{r,k}.

    ``coef`` [B, S, R]; ``lower``/``upper`` [B, R, K]; ``alpha`` [B, S, R, K] or None.
    Returns (window coefficients [B, S, R, K], offset [B, S]) such that for every x in the
    bounds, coef . y >= sum(window coef * x) + offset.
    """
    pos = coef.clamp(min=0)
    neg = coef - pos
    lam = lower_weights(lower, alpha)
    if lam.dim() == 3:
        lam = lam.unsqueeze(1)
    j, slope, offset = upper_plane(lower, upper)
    window = pos.unsqueeze(-1) * lam
    up = torch.zeros(window.shape, dtype=coef.dtype, device=coef.device)
    idx = j.unsqueeze(1).expand(*neg.shape).unsqueeze(-1)
    up.scatter_(-1, idx, (neg * slope.unsqueeze(1)).unsqueeze(-1))
    off = (neg * offset.unsqueeze(1)).sum(-1)
    return window + up, off


def default_cells(coef: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor):
    """``max_backward`` without alpha, as ((cell, value), (cell, value), offset): window r's
    coefficients are the first value [B, S, R] at its cell [B, R] (the largest lower bound:
    the one-hot lower plane) plus the second at its own (the upper plane's x_j), zero
    elsewhere. No [B, S, R, K] temporaries, which on a 3x3 pool are 9 times the coefficients
    (the dense form's three of them dominated the step); the same numbers as
    ``max_backward``'s at those cells (its others are zeros)."""
    pos = coef.clamp(min=0)
    neg = coef - pos
    j, slope, offset = upper_plane(lower, upper)
    return ((lower.argmax(-1), pos), (j, neg * slope.unsqueeze(1)),
            (neg * offset.unsqueeze(1)).sum(-1))


def initial_alpha(lower: torch.Tensor, n_spec: int) -> torch.Tensor:
    """alpha [B, S, R, K] reproducing the default lower plane (one-hot at the largest l)."""
    return lower_weights(lower).unsqueeze(1).expand(-1, n_spec, *lower.shape[1:])
