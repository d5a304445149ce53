"""GenBaB: branching on general nonlinear neurons, next to ReLU splits, in one search.

Idea from Shi et al., "Neural Network Verification with Branch-and-Bound for General
Nonlinearities" (TACAS 2025); our own formulation. A neuron z of a Sigmoid, Tanh, Sin, GELU, ...
layer with interval [l, u] is split at a point p strictly inside: the children carry [l, p] and
[p, u] as given bounds of z, so each half gets its own (tighter) linear relaxation and the
bounds downstream are recomputed from it. l < p < u makes both halves non-empty and their union
is [l, u], so no point of the parent is lost (interval tightening alone is sound; no beta
multipliers are needed). Relu neurons keep their sign splits with beta-CROWN.

Split points come from the pre-optimised lookup tables (``bounds.lookup``) or, for the ablation,
the midpoint. Which neuron to split is scored from the last backward pass only
(:func:`split_scores`): no extra bound propagation per candidate.

BBPS-style score (our variant of the bound-propagation-based estimate): the final bound meets
neuron j with coefficient A_j (per spec row) at its output and uses the lower plane where
A_j >= 0, the upper plane where A_j < 0. Replacing the parent's plane by a child's changes that
term by A_j * (child plane - parent plane)(z), linear in z; we take its mean over the child's
interval (its value at the child's midpoint), sum it over the spec rows still open, and score
the neuron by its worse child. For a Relu this is half of BaBSR's intercept score, so ReLU and
nonlinear candidates compete in the same units. Baseline ("width"): sum |A_j| (u - l) for
nonlinear neurons, BaBSR for Relus.

Products of two perturbed values (Mul / MatMul) are candidates too: an element of an operand
value is split the same way (interval tightening, at the midpoint: ``bounds.lookup.products``),
which tightens the McCormick planes downstream; scores in :mod:`verifier.bab.products`.
"""

from __future__ import annotations

import math

import torch

from bounds.engine.analysis import kink_points, kinks_form, split_search
from bounds.engine.deadline import check_deadline, timed_chunks
from bounds.engine.results import Intermediates
from bounds.graph import Graph
from bounds.lookup.products import product_points
from bounds.lookup.tables import branch_points, strictly_inside
from bounds.registry import rules
from bounds.rules.tangents import DomainError
from verifier.bab.branching import SplitLayer, babsr_scores
from verifier.bab.products import PRODUCT, product_score, product_uses
from verifier.config import Heuristic, PointMode


def split_ops() -> frozenset[str]:
    """Ops whose input interval GenBaB splits (their rules declare an "interval" split)."""
    return frozenset(op for op in rules().keys() if split_search(op) == "interval")


def __getattr__(name: str):
    # SPLIT_OPS (read by tests/bab/test_genbab.py) is derived from the rules: split_ops()
    if name == "SPLIT_OPS":
        return split_ops()
    raise AttributeError(name)


# Narrower intervals are not split again (their relaxation is already almost exact).
MIN_WIDTH = 1e-6

def split_layers(graph: Graph, nonlinear: bool = True,
                 products: bool | None = None) -> list[SplitLayer]:
    """Splittable layers in the topological order of their values, one per distinct value:
    Relu inputs, with ``nonlinear`` the inputs of the general nonlinearities of
    :func:`split_ops`, and with ``products`` (default: ``nonlinear``) the operands of products
    of two perturbed values. A value that feeds several of these gets one layer (one split
    record): its first Relu / split-op consumer decides how it is split, and the products it
    feeds are listed in ``products`` (their gains are added to its score)."""
    products = nonlinear if products is None else products
    uses = product_uses(graph) if products else {}
    found: dict[str, SplitLayer] = {}
    for node in graph.nodes:
        if not node.dynamic_inputs or node.dynamic_inputs[0] in found:
            continue
        search = split_search(node.op)
        if search != "sign" and not (nonlinear and search == "interval"):
            continue
        value = node.dynamic_inputs[0]
        found[value] = SplitLayer(node.name, value, tuple(graph.shape_of(value)), node.op,
                                 dict(node.attrs), uses.get(value, ()))
    for value, use in uses.items():
        if value not in found:
            found[value] = SplitLayer(use[0][0], value, tuple(graph.shape_of(value)), PRODUCT,
                                     {}, use)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(found.values(), key=lambda lay: order.get(lay.value, -1))


def has_nonlinear_splits(graph: Graph) -> bool:
    """Whether the graph has general nonlinear neurons or products that GenBaB can split."""
    return any(split_search(node.op) == "interval" and node.dynamic_inputs
               for node in graph.nodes) or \
        bool(product_uses(graph))


class SplitPoints:
    """Where to split a nonlinear neuron's interval: table lookup ("optimized") or midpoint."""

    def __init__(self, mode: PointMode = "optimized"):
        self.mode = mode

    def __call__(self, layer: SplitLayer, lower: torch.Tensor,
                 upper: torch.Tensor) -> torch.Tensor:
        """Points strictly inside (lower, upper) (the midpoint where no float fits)."""
        if layer.op == PRODUCT:
            return product_points(lower, upper)
        if self.mode == "midpoint" or layer.sign_split:
            mid = lower + (upper - lower) / 2
            if layer.sign_split:
                mid = torch.where((lower < 0) & (upper > 0), torch.zeros_like(mid), mid)
            return strictly_inside(mid, lower, upper)
        return branch_points(layer.op, lower, upper, attrs=layer.attrs)


def splittable(layer: SplitLayer, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[B, numel] candidates: unstable Relus; piecewise-linear neurons with a kink inside
    their interval (elsewhere their planes are exact already), unless the value also feeds
    products; other nonlinear neurons wider than MIN_WIDTH."""
    lower, upper = lower.flatten(1), upper.flatten(1)
    if layer.sign_split:
        return (lower < 0) & (upper > 0)
    wide = (upper - lower) > MIN_WIDTH
    if layer.products or kinks_form(layer.op, layer.attrs) is None:
        return wide
    inside = torch.zeros_like(wide)
    for at in kink_points(layer.op, layer.attrs):
        inside |= (lower < at) & (upper > at)
    return wide & inside


def _plane(rel, lower_side: bool, z: torch.Tensor) -> torch.Tensor:
    if lower_side:
        return rel.lower_slope * z + rel.lower_offset
    return rel.upper_slope * z + rel.upper_offset


def _relax(node, lower, upper, alpha=None):
    rule = rules().get(node.op, node.name)
    if alpha is None:
        return rule.relax(node, lower, upper)
    return rule.relax(node, lower.unsqueeze(1), upper.unsqueeze(1), alpha)


def _child_gain(node, parent, lower, upper, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[B, numel]: sum over open rows of A * (child plane - parent plane) at the child's mid."""
    child = _relax(node, lower, upper)
    mid = ((lower + upper) / 2).unsqueeze(1)

    def expand(rel):
        return type(rel)(*(t if t.dim() == a.dim() else t.unsqueeze(1) for t in (
            rel.lower_slope, rel.lower_offset, rel.upper_slope, rel.upper_offset)))

    child, parent = expand(child), expand(parent)
    gain_low = _plane(child, True, mid) - _plane(parent, True, mid)
    gain_up = _plane(parent, False, mid) - _plane(child, False, mid)
    per_row = torch.relu(a) * gain_low + torch.relu(-a) * gain_up
    per_row = torch.nan_to_num(per_row, nan=0.0, posinf=0.0, neginf=0.0)
    return (per_row.flatten(2) * w.unsqueeze(-1)).sum(1)


def bbps_layer(node, layer, lower, upper, a, alpha, w, points: SplitPoints) -> torch.Tensor:
    """Scores [B, numel] of one layer, in chunks of domains sized by the measured cost: a
    relaxation that bisects for tangent points (Gelu) takes tens of microseconds per element,
    so one wide layer of a large batch would run seconds past the deadline."""
    n = lower.shape[0]

    def rows(t, start: int, stop: int):  # tensors shared by the batch (size 1) stay whole
        return t if t is None or t.shape[0] != n else t[start:stop]

    def score(start: int, stop: int) -> torch.Tensor:
        lo, up = lower[start:stop], upper[start:stop]
        aa, ww = rows(a, start, stop), rows(w, start, stop)
        parent = _relax(node, lo, up, rows(alpha, start, stop))
        p = points(layer, lo, up)
        return torch.minimum(_child_gain(node, parent, lo, p, aa, ww),
                             _child_gain(node, parent, p, up, aa, ww))

    return torch.cat(timed_chunks(n, a[:1].numel(), score))


def split_scores(inter: Intermediates, layers: list[SplitLayer], coefs: dict, alphas: dict,
                 row_weight: torch.Tensor, heuristic: Heuristic,
                 points: SplitPoints) -> torch.Tensor:
    """Scores [B, total neurons] (layers concatenated, as ``decode`` reads them); -inf where a
    neuron cannot be split. ``coefs[layer.node]``: the backward coefficients [B, S, *shape]
    at each layer's output; ``alphas``: the relaxation parameters of that pass."""
    w = row_weight.to(inter.dtype)
    parts = []
    for layer in layers:
        check_deadline()  # a wide layer's estimates take seconds
        x = inter.bounds[layer.value]
        mask = splittable(layer, x.lower, x.upper)
        a = coefs[layer.node]
        if layer.op == PRODUCT:
            score = torch.zeros_like(mask, dtype=w.dtype)
        elif heuristic == "width" and layer.sign_split:
            score = babsr_scores(inter, [layer], coefs, alphas, row_weight)
            score = torch.where(torch.isfinite(score), score, torch.zeros_like(score))
        elif heuristic == "width":
            width = (x.upper - x.lower).unsqueeze(1)
            score = ((a.abs() * width).flatten(2) * w.unsqueeze(-1)).sum(1)
        else:
            alpha = alphas.get(layer.node)
            try:
                score = bbps_layer(inter.graph.node(layer.node), layer, x.lower, x.upper, a,
                                    None if alpha is None else alpha.to(inter.dtype), w, points)
            except DomainError:  # a child's planes overflow (Exp of a wide interval): no
                score = torch.zeros_like(mask, dtype=w.dtype)  # estimate; widths still rank
        score = score.flatten(1)
        if layer.products:
            p = points(layer, x.lower, x.upper)
            score = score + product_score(inter.graph, inter.bounds, layer.value,
                                          layer.products, coefs, alphas, w, p, heuristic)
        # Neurons that no open row sees still must be splittable: a tiny width-based score.
        score = score + 1e-9 * (x.upper - x.lower).flatten(1).clamp(max=1e3)
        parts.append(torch.where(mask, score, torch.full_like(score, -math.inf)))
    return torch.cat(parts, dim=1)
