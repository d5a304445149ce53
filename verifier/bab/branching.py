"""Which unstable ReLU to split: a BaBSR-like score from the linear bounds, and FSB filtering.

Score (our variant of the idea in Bunel et al., "Branch and bound for piecewise linear neural
network verification", JMLR 2020): in the backward pass a lower bound meets each unstable Relu
with coefficients A at its output. Where A < 0 the upper chord is used, and its intercept
-l u / (u - l) costs A * intercept in the bound; splitting the neuron makes the Relu exact and
removes that cost. Where A > 0 the lower line alpha z is used, whose largest gap to the Relu on
[l, u] is max(-alpha l, (1 - alpha) u); splitting removes that looseness too, which we weigh
less since the optimiser can move alpha. Scores are summed over the spec rows that still matter.

Filtered strong branching (FSB): the top-k neurons by that score are each tried on both
children with a cheap bound (parent bounds, alphas and betas, no optimisation); the neuron whose
worse child is best wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from bounds.engine.analysis import split_search
from bounds.engine.crown import backward_bound
from bounds.engine.results import Intermediates, PassCache
from bounds.graph import Graph

LOWER_GAP_WEIGHT = 0.25


@dataclass(frozen=True)
class SplitLayer:
    """A layer of splittable neurons: the nonlinear node ``node`` (an op split by sign such as
    Relu, or with GenBaB a general nonlinearity) of op ``op``, and its input value, where
    splits and given bounds live."""

    node: str  # the node (Relu or another splittable nonlinearity)
    value: str  # its input value z (split constraints and given bounds live here)
    shape: tuple[int, ...]
    op: str
    attrs: Mapping = field(default_factory=dict)
    # GenBaB: products (node, operand position) that also take this value as an operand;
    # op is ``verifier.bab.products.PRODUCT`` (node: the first of them) when only they do.
    products: tuple[tuple[str, int], ...] = ()

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def sign_split(self) -> bool:
        """Split by the sign of z (beta-CROWN), as the op's rule says (Relu), rather than at
        a point of its interval (GenBaB)."""
        return split_search(self.op) == "sign"


def sign_split_layers(graph: Graph) -> list[SplitLayer]:
    """Nodes of ops split by sign (Relu) in topological order, one per distinct input value."""
    layers, seen = [], set()
    for node in graph.nodes:
        if (split_search(node.op) == "sign" and node.dynamic_inputs
                and node.dynamic_inputs[0] not in seen):
            value = node.dynamic_inputs[0]
            seen.add(value)
            layers.append(SplitLayer(node.name, value, tuple(graph.shape_of(value)), node.op))
    return layers


def layer_output_coefs(inter: Intermediates, start: str, coef: torch.Tensor,
                      layers: list[SplitLayer], alphas: dict, extra: dict | None,
                      cache: PassCache | None = None) -> tuple[dict, torch.Tensor | None]:
    """Backward coefficients A [B, S, *shape] reaching each layer's node output (and each
    product a layer's value feeds) in one bound pass (with ``alphas`` and the split terms
    ``extra``), and the input coefficients of that pass (None: none reached the input)."""
    b, s = coef.shape[:2]
    names = {lay.node for lay in layers} | {n for lay in layers for n, _ in lay.products}
    with torch.no_grad():
        res = backward_bound(inter, start, coef,
                             alphas={k: v.to(inter.dtype) for k, v in alphas.items()},
                             extra=extra, keep=names, keep_input=True, cache=cache)
    kept = res.kept_coef
    coefs = {name: kept[name] if name in kept else
             torch.zeros((b, s, *inter.graph.shape_of(name)), device=coef.device,
                         dtype=coef.dtype)
             for name in names}
    return coefs, res.input_coef


def babsr_scores(inter: Intermediates, layers: list[SplitLayer], coefs: dict, alphas: dict,
                 row_weight: torch.Tensor) -> torch.Tensor:
    """Scores [B, total neurons] (layers concatenated); -inf where a neuron is not unstable."""
    w = row_weight.to(inter.dtype)
    parts = []
    for layer in layers:
        x = inter.bounds[layer.value]
        lo, up = x.lower.unsqueeze(1), x.upper.unsqueeze(1)
        unstable = (x.lower < 0) & (x.upper > 0)
        width = torch.where((up - lo) > 0, up - lo, torch.ones_like(up))
        intercept = torch.where(unstable.unsqueeze(1), -lo * up / width, torch.zeros_like(up))
        a = coefs[layer.node]
        alpha = alphas.get(layer.node)
        alpha = (up > -lo).to(up) if alpha is None else alpha.to(up)
        gap = torch.maximum(-alpha * lo, (1 - alpha) * up).clamp(min=0)
        per_row = torch.relu(-a) * intercept + LOWER_GAP_WEIGHT * torch.relu(a) * gap
        score = (per_row.flatten(2) * w.unsqueeze(-1)).sum(1)
        # Neurons that no open row sees still must be splittable: a tiny width-based score.
        score = score + 1e-9 * torch.minimum(-x.lower, x.upper).flatten(1).clamp(min=0)
        parts.append(torch.where(unstable.flatten(1), score, torch.full_like(score, -math.inf)))
    return torch.cat(parts, dim=1)


def decode(layers: list[SplitLayer], index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global neuron indices [N] -> (layer index [N], flat position in that layer [N])."""
    sizes = torch.tensor([lay.numel for lay in layers], device=index.device)
    ends = torch.cumsum(sizes, 0)
    layer = torch.searchsorted(ends, index.contiguous(), right=True)
    start = ends[layer] - sizes[layer]
    return layer, index - start


def top_candidates(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [B, k], valid [B, k]) of the k best-scored neurons per domain."""
    k = max(1, min(k, scores.shape[1]))
    values, idx = torch.topk(scores, k, dim=1)
    return idx, torch.isfinite(values)


def pick_fsb(candidates: torch.Tensor, valid: torch.Tensor, active_margin: torch.Tensor,
             inactive_margin: torch.Tensor) -> torch.Tensor:
    """Per domain the candidate [B] whose worse child has the best margin (ties: BaBSR order)."""
    worse = torch.minimum(active_margin, inactive_margin)
    worse = torch.where(valid, worse, torch.full_like(worse, -math.inf))
    # Among refuted-both candidates (inf) prefer the first; argmax returns the first maximum.
    best = torch.argmax(worse, dim=1)
    return candidates.gather(1, best.unsqueeze(1)).squeeze(1)
