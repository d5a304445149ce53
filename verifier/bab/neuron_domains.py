"""Neuron-split sub-domains as stacked tensors: split decisions, bounds and warm starts.

A domain is the region box plus one split code per neuron of a sign-split layer (Relu input:
0 free, +1 active z >= 0, -1 inactive z <= 0) and split flags per neuron of the other split
layers (GenBaB). Each carries the interval bounds of every split layer's input found so far
(the parent's, tightened by its own splits; for general nonlinear layers and products' operands
the splits are interval tightenings only), the alphas and betas of its last bound
(warm starts for its children), its spec-row lower bounds and the disjuncts already refuted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from bounds.engine.batch_rows import as_indices, take_rows
from bounds.engine.results import Intermediates
from bounds.types import Interval
from verifier.bab.branching import SplitLayer, decode

STORE_DTYPE = torch.float32  # warm starts need no precision; halves the queue's memory


@dataclass
class NeuronDomains:
    splits: dict[str, torch.Tensor]  # split value -> int8 [N, *shape] (Relu codes / flags)
    lower: dict[str, torch.Tensor]  # input value of a split layer (Relu or not) -> [N, *shape]
    upper: dict[str, torch.Tensor]
    alphas: dict[str, torch.Tensor]  # node -> [N, S, *shape] (STORE_DTYPE)
    betas: dict[str, torch.Tensor]  # Relu input value -> [N, S, *shape] (STORE_DTYPE)
    bound: torch.Tensor  # [N, S] lower bounds of coef @ y - rhs
    margin: torch.Tensor  # [N] smaller = further from a proof
    refuted: torch.Tensor  # [N, D] bool
    candidates: torch.Tensor  # [N, k] global neuron indices to branch on, -1 = none
    depth: torch.Tensor  # [N] number of splits

    def __len__(self) -> int:
        return self.margin.shape[0]

    def _map(self, fn) -> NeuronDomains:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = {k: fn(t) for k, t in v.items()} if isinstance(v, dict) else fn(v)
        return NeuronDomains(**out)

    def select(self, idx: torch.Tensor) -> NeuronDomains:
        """The domains ``idx`` ([N] bool or indices)."""
        rows = as_indices(idx)
        return self._map(lambda t: take_rows(t, rows))

    def repeat(self, times: int) -> NeuronDomains:
        return self._map(lambda t: t.repeat(times, *([1] * (t.dim() - 1))))

    def extend(self, other: NeuronDomains) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for k in mine:
                    mine[k] = torch.cat([mine[k], theirs[k]])
            else:
                setattr(self, f.name, torch.cat([mine, theirs]))

    def nbytes(self) -> int:
        total = 0
        for f in fields(self):
            v = getattr(self, f.name)
            for t in (v.values() if isinstance(v, dict) else (v,)):
                total += t.numel() * t.element_size()
        return total


def beta_slots(layers: list[SplitLayer]) -> dict[str, tuple[int, ...]]:
    """Beta key -> shape of every split constraint a domain may get (see ``beta.split_terms``):
    the value of a sign-split layer, ``value|lo`` and ``value|up`` of the others."""
    slots = {}
    for lay in layers:
        keys = [lay.value] if lay.sign_split else [lay.value + "|lo", lay.value + "|up"]
        slots.update({key: lay.shape for key in keys})
    return slots


def merge_rows(old: dict, new: dict, rows: torch.Tensor, lead: tuple[int, int], device,
               slots: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Full-row warm starts [N, S, ...] (``lead`` = (N, S)): the old values, with the
    optimised spec rows ``rows`` replaced by ``new``; ``slots`` (betas): keys present in every
    domain, zero until split, so that all domains share the same keys."""
    shapes = {k: v.shape[2:] for k, v in new.items()}
    shapes.update(slots or {})
    merged = {}
    for k in {*old, *new, *shapes}:
        if k in old:
            base = old[k].clone()
        else:
            base = torch.zeros((*lead, *shapes[k]), dtype=STORE_DTYPE, device=device)
        if k in new:
            base[:, rows] = new[k].detach().to(STORE_DTYPE)
        merged[k] = base
    return merged


def merge_pairs(old: dict, new: dict, dom: torch.Tensor, row: torch.Tensor,
                lead: tuple[int, int], device,
                slots: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Like :func:`merge_rows`, with ``new`` [P, 1, ...] optimised for the (domain, row) pairs
    (``dom`` [P], ``row`` [P]) only."""
    merged = merge_rows(old, {}, row[:0], lead, device,
                        {**{k: v.shape[2:] for k, v in new.items()}, **(slots or {})})
    for k, v in new.items():
        merged[k][dom, row] = v[:, 0].detach().to(STORE_DTYPE)
    return merged


PointFn = Callable[[SplitLayer, torch.Tensor, torch.Tensor], torch.Tensor]
CarryFn = Callable[["NeuronDomains", "NeuronDomains"], None]


def split_domains(dom: NeuronDomains, layers: list[SplitLayer], choice: torch.Tensor,
                  points: PointFn | None = None, carry: CarryFn | None = None) -> NeuronDomains:
    """Two children per domain split at ``choice`` [N]: first all upper halves (Relu active,
    z >= 0; nonlinear z in [p, u]), then all lower halves (Relu inactive, z <= 0; z in [l, p]).

    Nonlinear neurons are split at ``points(layer, l, u)`` (strictly inside (l, u), so both
    halves are non-empty and together cover [l, u]); their split flags record which bound a
    split set (1: the lower, 2: the upper; for beta terms, see ``beta.split_terms``).
    ``carry(dom, kids)`` adapts the children's warm starts to their new intervals
    (``warm_start.AlphaCarry``).
    """
    n = len(dom)
    kids = dom.repeat(2)
    layer_idx, pos = decode(layers, choice)
    rows = torch.arange(2 * n, device=choice.device)
    li, p = layer_idx.repeat(2), pos.repeat(2)
    sign = torch.cat([torch.ones(n, device=choice.device), -torch.ones(n, device=choice.device)])
    for j, layer in enumerate(layers):
        m = li == j
        if not bool(m.any()):
            continue
        r, q, sg = rows[m], p[m], sign[m]
        lo = kids.lower[layer.value].reshape(2 * n, -1)
        up = kids.upper[layer.value].reshape(2 * n, -1)
        l0, u0 = lo[r, q], up[r, q]
        if layer.sign_split:
            kids.splits[layer.value].reshape(2 * n, -1)[r, q] = sg.to(torch.int8)
            lo[r, q] = torch.where(sg > 0, l0.clamp(min=0), l0)
            up[r, q] = torch.where(sg < 0, u0.clamp(max=0), u0)
            continue
        if points is None:
            raise ValueError(f"split of nonlinear layer {layer.node!r} needs split points")
        pt = points(layer, l0, u0)
        lo[r, q] = torch.where(sg > 0, pt, l0)
        up[r, q] = torch.where(sg < 0, pt, u0)
        flags = kids.splits[layer.value].reshape(2 * n, -1)
        flags[r, q] = flags[r, q] | torch.where(sg > 0, 1, 2).to(torch.int8)
    kids.depth = kids.depth + 1
    if carry is not None:
        carry(dom, kids)
    return kids


def split_more(dom: NeuronDomains, layers: list[SplitLayer], choice: torch.Tensor,
               points: PointFn | None, extra: int, batch: int, carry: CarryFn | None = None):
    """:func:`split_domains` at ``choice`` [N], then at up to ``extra`` further distinct
    candidates of each domain (``dom.candidates`` order) while the children fill less than
    ``batch``: 2**k children per domain (the bound engine costs about the same for 2 or 64
    domains). Returns (children, per parent the smallest layer index split [N])."""
    n = len(dom)
    kids = split_domains(dom, layers, choice, points, carry)
    first, _ = decode(layers, choice)
    used = [choice]
    for j in range(dom.candidates.shape[1] if extra > 0 else 0):
        if len(used) > extra or 2 * len(kids) > batch:
            break
        c = dom.candidates[:, j]
        ok = c >= 0
        for u in used:
            ok = ok & (c != u)
        if not bool(ok.all()):
            continue
        used.append(c)
        kids = split_domains(kids, layers, c.repeat(len(kids) // n), points, carry)
        first = torch.minimum(first, decode(layers, c)[0])
    return kids, first


def child_intermediates(parents: Intermediates, kids: NeuronDomains) -> Intermediates:
    """Intermediate bounds of ``kids`` split from the domains of ``parents`` (kid i from
    parent i mod len(parents), the order of :func:`split_domains` and :func:`split_more`)
    without a pass over the network: each split layer's interval is the kid's own (its
    parent's with the splits applied), every other value keeps its parent's interval and
    float rounding allowance. Sound: a kid's region lies inside its parent's, and the
    allowances hold on any subset of the region they were computed over. (What
    ``compute_intermediate`` with every given bound reused returns, but for the IBP of the
    values after a split, which can only tighten; on oval21 base that IBP pass over the
    children took a sixth of a step.)"""
    n = parents.batch
    idx = torch.arange(len(kids), device=parents.device) % n
    picked = parents.select(idx)
    bounds = dict(picked.bounds)
    infeasible = torch.zeros(len(kids), dtype=torch.bool, device=parents.device)
    if parents.infeasible is not None:
        infeasible |= parents.infeasible[idx]
    for value, lower in kids.lower.items():
        upper = kids.upper[value]
        bounds[value] = Interval(lower, upper)
        infeasible |= (lower > upper).flatten(1).any(1)
    return Intermediates(picked.graph, picked.box, bounds, picked.deltas, infeasible)
