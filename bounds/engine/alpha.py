"""alpha-CROWN: optimise the free relaxation parameters by gradient ascent (Relu lower slopes,
tangent points of smooth ops, window-max lower planes, McCormick plane mixing of products).

Any alpha in the allowed range gives a sound bound, so optimisation only ever tightens: we keep
the best bound (and its alphas) seen per domain and spec row, and return them for warm starts
(the loop: ``optimize.maximize``, shared with beta-CROWN).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from bounds.engine.constants import node_args
from bounds.engine.crown import backward_bound
from bounds.engine.optimize import Group, Schedule, maximize
from bounds.engine.results import Intermediates, PassCache
from bounds.registry import rules


class _RuleAlphas(Mapping):
    """op -> (initial alpha, allowed range) of the rules whose ``alpha`` is elementwise (or,
    with ``structured``, rule-specific), read from the registry: the rule is the only source.

    Elementwise: init(lower, upper) -> alpha like lower (for the smooth ops alpha places the
    tangent point at l + alpha (u - l), see bounds/rules). Structured: init(node, args, n_spec)
    -> [B, S, ...] or None (MaxPool/ReduceMax: lower-plane weights over each window; products
    of two dynamic operands: McCormick plane mixing (t, t') per product)."""

    def __init__(self, structured: bool):
        self.structured = structured

    def _spec(self, op: str):
        registry = rules()
        rule = registry.get(op) if op in registry else None
        if rule is None or rule.alpha is None or rule.alpha.structured != self.structured:
            return None
        return rule.alpha

    def __getitem__(self, op: str) -> tuple[Callable, tuple[float, float]]:
        spec = self._spec(op)
        if spec is None:
            raise KeyError(op)
        return spec.init, (spec.low, spec.high)

    def __contains__(self, op) -> bool:
        return self._spec(op) is not None

    def __iter__(self):
        return (op for op in rules().keys() if op in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


ALPHA_OPS: Mapping[str, tuple[Callable, tuple[float, float]]] = _RuleAlphas(structured=False)
STRUCTURED_ALPHA_OPS: Mapping[str, tuple[Callable, tuple[float, float]]] = _RuleAlphas(
    structured=True)


def alpha_ranges(graph, alphas: Mapping[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """node -> the allowed range of its alpha (its rule's), for the nodes of ``alphas``."""
    out = {}
    for name in alphas:
        spec = rules().get(graph.node(name).op).alpha
        out[name] = (spec.low, spec.high)
    return out


def _initial(inter: Intermediates, node, n_spec: int) -> torch.Tensor | None:
    """The starting alpha of ``node`` from its rule (None: the node has none)."""
    registry = rules()
    spec = registry.get(node.op).alpha if node.op in registry else None
    if spec is None or not spec.applies(node):
        return None
    if not spec.structured:
        x = inter.bounds[node.dynamic_inputs[0]]
        return spec.init(x.lower, x.upper).unsqueeze(1).expand(-1, n_spec, *node.shape)
    return spec.init(node, node_args(node, inter.bounds, inter.device, inter.dtype), n_spec)


def init_alphas(inter: Intermediates, n_spec: int, warm: dict | None = None,
                before: str | None = None) -> dict:
    """One alpha tensor ([B, S, *shape] for elementwise ops, rule-specific for window max and
    products) per optimisable node (upstream of ``before`` if given), warm-started where
    shapes match."""
    alphas = {}
    for node in inter.graph.nodes:
        if node.name == before:
            break
        start = _initial(inter, node, n_spec)
        if start is None:
            continue
        if warm is not None and node.name in warm and warm[node.name].shape == start.shape:
            start = warm[node.name]
        alphas[node.name] = start.detach().clone().requires_grad_(True)
    return alphas


def optimize_alpha(inter: Intermediates, start: str, coef: torch.Tensor, iterations: int = 20,
                   lr: float = 0.1, warm: dict | None = None,
                   stop: Callable[[torch.Tensor], bool] | None = None,
                   cache: PassCache | None = None) -> tuple[torch.Tensor, dict]:
    """Best lower bounds of coef . value(start) over alpha; returns (lower [B,S], alphas)."""
    cache = PassCache() if cache is None else cache
    alphas = init_alphas(inter, coef.shape[1], warm, before=start)
    if not alphas or iterations <= 0:
        with torch.no_grad():
            fixed = {k: v.detach() for k, v in alphas.items()}
            return backward_bound(inter, start, coef, alphas=fixed, cache=cache).lower, alphas
    # The rules' default relaxation (alpha=None) is a valid starting best: alpha's initial
    # point for smooth ops can be looser than it.
    with torch.no_grad():
        best = backward_bound(inter, start, coef, cache=cache).lower

    def bound() -> torch.Tensor:
        return backward_bound(inter, start, coef, alphas=alphas, cache=cache).lower

    group = Group(alphas, lr, alpha_ranges(inter.graph, alphas))
    best, (best_alphas,) = maximize(bound, [group], Schedule(iterations, stop=stop), best)
    return best, best_alphas
