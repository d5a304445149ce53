"""The alpha-optimisable ops and their alphas' ranges, read from the rule registry (the rule is
the only source): elementwise alphas (``ALPHA_OPS``) and rule-specific structured ones
(``STRUCTURED_ALPHA_OPS``: window max, products of two perturbed values), and the alphas an
optimisation starts from (``init_alphas``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from bounds.engine.constants import node_args
from bounds.engine.deadline import checked
from bounds.engine.results import Intermediates
from bounds.registry import rules


class _RuleAlphas(Mapping):
    """op -> (initial alpha, allowed range) of the rules whose ``alpha`` is elementwise (or,
    with ``structured``, rule-specific), read from the registry: the rule is the only source.

    Elementwise: init(lower, upper, attrs) -> alpha like lower (for the smooth ops alpha
    places the tangent point at l + alpha (u - l), see bounds/rules). Structured: init(node,
    args, n_spec) -> [B, S, ...] or None (MaxPool/ReduceMax: lower-plane weights over each
    window; products of two dynamic operands: McCormick plane mixing (t, t') per product)."""

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
        return spec.init(x.lower, x.upper, node.attrs).unsqueeze(1).expand(-1, n_spec, *node.shape)
    return spec.init(node, node_args(node, inter.bounds, inter.device, inter.dtype), n_spec)


def init_alphas(inter: Intermediates, n_spec: int, warm: dict | None = None,
                before: str | None = None, structured: bool | None = None) -> dict:
    """One alpha tensor ([B, S, *shape] for elementwise ops, rule-specific for window max and
    products) per optimisable node (upstream of ``before`` if given), warm-started where
    shapes match; ``structured`` True/False: only the nodes whose alpha is/is not
    structured (None: all)."""
    alphas = {}
    for node in checked(inter.graph.nodes):
        if node.name == before:
            break
        if structured is not None and (node.op in STRUCTURED_ALPHA_OPS) != structured:
            continue
        start = _initial(inter, node, n_spec)
        if start is None:
            continue
        if warm is not None and node.name in warm and warm[node.name].shape == start.shape:
            start = warm[node.name]
        alphas[node.name] = start.detach().clone().requires_grad_(True)
    return alphas
