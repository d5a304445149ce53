"""Softmax(axis): y_i = exp(x_i) / sum_j exp(x_j) over one axis.

IBP: y_i increases in x_i and decreases in every x_j (j != i), so
y_i >= exp(l_i) / (exp(l_i) + sum_{j!=i} exp(u_j)) and y_i <= exp(u_i) / (exp(u_i) +
sum_{j!=i} exp(l_j)). Computed stably by shifting with the maximum upper bound along the axis.
"""

from __future__ import annotations

import torch

from bounds.registry import OpRule, OpTraits
from bounds.types import Interval


def _forward(node, args):
    return torch.softmax(args[0], dim=int(node.attrs["axis"]) + 1)


def _ibp(node, args):
    x = args[0]
    dim = int(node.attrs["axis"]) + 1
    shift = x.upper.amax(dim=dim, keepdim=True)
    el, eu = torch.exp(x.lower - shift), torch.exp(x.upper - shift)
    sum_l, sum_u = el.sum(dim, keepdim=True), eu.sum(dim, keepdim=True)
    lower = el / (el + (sum_u - eu).clamp_min(0))
    upper = eu / (eu + (sum_l - el).clamp_min(0))
    return Interval(lower, torch.nan_to_num(upper, nan=1.0).clamp_max(1.0))


RULES = (
    OpRule("Softmax", forward=_forward, ibp=_ibp, traits=OpTraits(),
           doc="exp(x_i) / sum_j exp(x_j) along one axis"),
)
