"""Softmax(axis): y_i = exp(x_i) / sum_j exp(x_j) over one axis.

IBP: y_i increases in x_i and decreases in every x_j (j != i), so
y_i >= exp(l_i) / (exp(l_i) + sum_{j!=i} exp(u_j)) and y_i <= exp(u_i) / (exp(u_i) +
sum_{j!=i} exp(l_j)). Computed stably by shifting with the maximum upper bound along the axis;
the sums over j != i are formed directly (no cancelling subtraction) and widened by a few ulps.
"""

from __future__ import annotations

import torch

from bounds.registry import OpRule, OpTraits
from bounds.types import Interval


def _forward(node, args):
    return torch.softmax(args[0], dim=int(node.attrs["axis"]) + 1)


def _others_sum(e: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_{j != i} e_j for every i along ``dim``, without the cancelling total - e_i."""
    moved = e.movedim(dim, -1)
    n = moved.shape[-1]
    mask = 1.0 - torch.eye(n, dtype=e.dtype, device=e.device)
    return (moved.unsqueeze(-2) * mask).sum(-1).movedim(-1, dim)


def _ibp(node, args):
    x = args[0]
    dim = int(node.attrs["axis"]) + 1
    shift = x.upper.amax(dim=dim, keepdim=True)
    el, eu = torch.exp(x.lower - shift), torch.exp(x.upper - shift)
    lower = el / (el + _others_sum(eu, dim))
    upper = eu / (eu + _others_sum(el, dim))
    # Outward margin for the rounding of exp, the sums and the division (a few ulps each).
    margin = 8 * x.lower.shape[dim] * torch.finfo(x.lower.dtype).eps
    lower = (lower * (1 - margin)).clamp_min(0.0)
    upper = torch.nan_to_num(upper * (1 + margin), nan=1.0).clamp_max(1.0)
    return Interval(lower, upper)


RULES = (
    OpRule("Softmax", forward=_forward, ibp=_ibp, traits=OpTraits(),
           doc="exp(x_i) / sum_j exp(x_j) along one axis"),
)
