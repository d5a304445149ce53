"""Nogoods as cutting planes inside the bound: cut multipliers in the spirit of GCP-CROWN
(Zhang et al. 2022) and BICCOS (Zhou et al. 2024), with our own derivation and code.

A nogood N (``nogoods.py``) is a set of Relu literals that no counterexample meets together.
With the phase indicator s_j of neuron j (s = 1 where z_j >= 0, s = 0 where z_j <= 0; either
at z_j = 0) every counterexample x satisfies, for every indicator vector consistent with it,

    g_N(s) = sum_{j in N+} s_j - sum_{j in N-} s_j - (|N+| - 1) <= 0        (the cut)

(some literal of N fails strictly at x, so its indicator is forced the other way). To prove a
spec row f > 0 on a domain D it suffices to bound min f over the counterexamples in D, so for
multipliers mu >= 0 the bound may add mu . g: for a counterexample f >= f + mu . g. (The
result proves f > 0 where it is positive; where it is not, it is still below the true
minimum, whose point is a counterexample.) Sum_N mu_N g_N = sum_j c_j s_j + const with c_j the
signed sum of the multipliers of the cuts holding neuron j; per neuron of D:

* fixed (split, or l >= 0 / u <= 0 by its bounds): s_j is 1 (l >= 0) or 0, a constant.
* unstable (l < 0 < u): every consistent s satisfies relu(z)/u <= s <= 1 + (relu(z) - z)/l,
  so for c >= 0, c s >= (c/u) relu(z), and for c < 0, c s >= c + (c/l) (relu(z) - z): linear
  terms on the Relu's output and input, which the backward pass carries as ``extra``
  coefficients (as it carries beta's split terms), and a constant.

Rounding: the slopes c/u and c/l are rounded down (each multiplies relu(z) - z >= 0 or
relu(z) >= 0, so a smaller slope keeps the inequality), and the constant gives up a relative
allowance for the sums of multipliers. The Lagrangian bound is then sound for every mu >= 0,
whatever the cuts; that the cuts are nogoods is what makes it a bound on counterexamples only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bounds.engine.analysis import outputs_relu
from bounds.graph import Graph
from verifier.bab.branching import SplitLayer

MAX_CUTS = 32  # cuts per batch (multipliers [P, S, K] and the products below grow with K)
# the constant's allowance for rounding: this many times the gamma_n bound of its sums
ROUNDING_FACTOR = 4


def relu_outputs(graph: Graph, layers: list[SplitLayer]) -> bool:
    """Whether every layer's node outputs relu(z) exactly (its rule's piecewise-linear form
    is 0 + 0 z + 1 relu(z - 0)): the cut terms above are written on that output. A
    LeakyRelu is split by sign too, but its a z + (1 - a) relu(z) would take wrong terms."""
    return all(outputs_relu(graph.node(lay.node)) for lay in layers)


@dataclass(frozen=True)
class CutSet:
    """K cuts over the neurons of ``layers``, for a batch of B domains (or pairs)."""

    layers: tuple[SplitLayer, ...]
    signs: tuple[torch.Tensor, ...]  # per layer [K, numel] float: +1 in N+, -1 in N-, 0
    plus: torch.Tensor  # [K] |N+|
    length: torch.Tensor  # [K] |N|
    mask: torch.Tensor  # [B, K] bool: the cuts each domain uses

    def __len__(self) -> int:
        return self.plus.shape[0]

    def select(self, rows: torch.Tensor) -> CutSet:
        return CutSet(self.layers, self.signs, self.plus, self.length, self.mask[rows])

    def to(self, dtype: torch.dtype) -> CutSet:
        return CutSet(self.layers, tuple(s.to(dtype) for s in self.signs), self.plus.to(dtype),
                      self.length.to(dtype), self.mask)


def cut_set(layers, idx: torch.Tensor, sgn: torch.Tensor, codes: torch.Tensor,
            dtype: torch.dtype, device, cap: int = MAX_CUTS) -> CutSet | None:
    """The cuts (nogoods ``idx``/``sgn`` [M, L], global neuron indices and phases, 0-padded)
    that can tighten the bound of domains with effective codes ``codes`` [B, T] (+1 / -1 for
    neurons fixed active / inactive, 0 unstable): no literal contradicted (else the cut is
    slack by 1 or more) and one at least unstable (else the domain holds the nogood and
    pruning drops it). Up to ``cap`` of them, those that most domains use (then the shortest)."""
    if len(idx) == 0 or codes.shape[0] == 0:
        return None
    lit = sgn != 0
    got = codes[:, idx]  # [B, M, L]
    contradicted = (lit & (got == -sgn)).any(-1)
    free = (lit & (got == 0)).any(-1)
    use = free & ~contradicted  # [B, M]
    count = use.sum(0)
    if not bool((count > 0).any()):
        return None
    length = lit.sum(1)
    # most domains first, then shorter cuts (tighter: fewer literals to fail)
    key = count.to(torch.float64) * (1 << 16) - length.to(torch.float64)
    order = torch.argsort(key, descending=True)[:cap]
    order = order[count[order] > 0]
    idx, sgn, use = idx[order], sgn[order], use[:, order]
    k = len(order)
    signs, start = [], 0
    for lay in layers:
        part = torch.zeros((k, lay.numel), dtype=dtype)
        inside = lit[order] & (idx >= start) & (idx < start + lay.numel)
        rows, cols = inside.nonzero(as_tuple=True)
        part[rows, idx[rows, cols] - start] = sgn[rows, cols].to(dtype)
        signs.append(part.to(device))
        start += lay.numel
    plus = ((sgn == 1) & lit[order]).sum(1).to(dtype).to(device)
    return CutSet(tuple(layers), tuple(signs), plus, length[order].to(dtype).to(device),
                  use.to(device))


def cut_terms(cuts: CutSet, bounds, mu: torch.Tensor):
    """The backward pass's ``extra`` coefficients and the constant [B, S] of the Lagrangian
    terms mu . g of ``cuts`` (module docstring), for multipliers ``mu`` [B, S, K] >= 0 and the
    Relu inputs' interval bounds ``bounds`` (value -> Interval [B, *shape])."""
    mu = mu * cuts.mask.unsqueeze(1).to(mu)
    b, s = mu.shape[:2]
    dtype = mu.dtype
    const = -(mu * (cuts.plus - 1)).sum(-1)
    size = (mu * cuts.length).sum(-1)  # sum of |coefficient| over the cuts' literals
    extra: dict[str, torch.Tensor] = {}
    down = torch.tensor(-torch.inf, dtype=dtype, device=mu.device)
    for lay, sign in zip(cuts.layers, cuts.signs, strict=True):
        c = mu @ sign.to(dtype)  # [B, S, numel]
        x = bounds[lay.value]
        lo = x.lower.reshape(b, 1, -1).to(dtype)
        up = x.upper.reshape(b, 1, -1).to(dtype)
        on, off = lo >= 0, (up <= 0) & (lo < 0)
        free = ~(on | off)
        const = const + (c * on).sum(-1)
        pos = torch.where(free, c.clamp(min=0), 0.0)
        neg = torch.where(free, c.clamp(max=0), 0.0)
        const = const + neg.sum(-1)
        # slopes rounded down: c/u for c >= 0 (times relu(z) >= 0) and c/l for c < 0 (times
        # relu(z) - z >= 0)
        slope_up = torch.nextafter(pos / torch.where(free, up, 1.0), down)
        slope_lo = torch.nextafter(neg / torch.where(free, lo, -1.0), down)
        slope_up = torch.where(pos > 0, slope_up, 0.0)
        slope_lo = torch.where(neg < 0, slope_lo, 0.0)
        shape = (b, s, *lay.shape)
        extra[lay.node] = (slope_up + slope_lo).reshape(shape)
        extra[lay.value] = (-slope_lo).reshape(shape)
    # Rounding of the sums above: each c_j sums at most K products, and each constant sums
    # the nonzero c_j (at most the cuts' literals, adding exact zeros is exact) and K terms;
    # every sum's magnitude is at most ``size``, so n eps size per sum with n terms bounds its
    # error (Higham's gamma_n, with room to spare)
    terms = float(cuts.length.sum()) + len(cuts) + 8
    allowance = ROUNDING_FACTOR * terms * torch.finfo(dtype).eps * (2 * size + 1)
    return extra, const - allowance


def merge_extra(extra: dict, more: dict) -> dict:
    """``extra`` with the coefficients of ``more`` added (a new dict)."""
    out = dict(extra)
    for k, v in more.items():
        out[k] = out[k] + v if k in out else v
    return out
