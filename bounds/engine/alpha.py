"""alpha-CROWN: optimise the free relaxation parameters (Relu lower slopes) by gradient ascent.

Any alpha in the allowed range gives a sound bound, so optimisation only ever tightens: we keep
the best bound (and its alphas) seen per domain and spec row, and return them for warm starts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bounds.engine.crown import BoundState, backward_bound


# op -> (initial alpha from the input bounds, allowed range)
def _half(lo, up):
    return torch.full_like(lo, 0.5)


def _crown_relu_like(lo, up):
    return (up > -lo).to(lo.dtype)


# For the smooth ops alpha places the tangent point at l + alpha (u - l) (see bounds/rules).
ALPHA_OPS: dict[str, tuple[Callable, tuple[float, float]]] = {
    "Relu": (_crown_relu_like, (0.0, 1.0)),
    "LeakyRelu": (_crown_relu_like, (0.0, 1.0)),
    **{op: (_half, (0.0, 1.0)) for op in (
        "Sigmoid", "Tanh", "Atan", "Erf", "Sin", "Cos", "Gelu", "Exp", "Log", "Sqrt",
        "Reciprocal", "Pow")},
}


def init_alphas(state: BoundState, n_spec: int, warm: dict | None = None,
                before: str | None = None) -> dict:
    """One alpha tensor [B, S, *shape] per optimisable node (upstream of ``before`` if given),
    warm-started where shapes match."""
    alphas = {}
    for node in state.graph.nodes:
        if node.name == before:
            break
        if node.op not in ALPHA_OPS:
            continue
        x = state.bounds[node.dynamic_inputs[0]]
        init, _ = ALPHA_OPS[node.op]
        start = init(x.lower, x.upper).unsqueeze(1).expand(-1, n_spec, *node.shape)
        if warm is not None and node.name in warm and warm[node.name].shape == start.shape:
            start = warm[node.name]
        alphas[node.name] = start.detach().clone().requires_grad_(True)
    return alphas


def _clip_(alphas: dict, state: BoundState) -> None:
    with torch.no_grad():
        for name, a in alphas.items():
            lo, hi = ALPHA_OPS[state.graph.node(name).op][1]
            a.clamp_(lo, hi)


def optimize_alpha(state: BoundState, start: str, coef: torch.Tensor, iterations: int = 20,
                   lr: float = 0.1, warm: dict | None = None,
                   stop: Callable[[torch.Tensor], bool] | None = None):
    """Best lower bounds of coef . value(start) over alpha; returns (lower [B,S], alphas)."""
    alphas = init_alphas(state, coef.shape[1], warm, before=start)
    if not alphas or iterations <= 0:
        with torch.no_grad():
            state.alphas = {k: v.detach() for k, v in alphas.items()}
            return backward_bound(state, start, coef, use_alpha=bool(alphas)), alphas
    optimizer = torch.optim.Adam(list(alphas.values()), lr=lr)
    # The rules' default relaxation (alpha=None) is a valid starting best: alpha's initial
    # point for smooth ops can be looser than it.
    with torch.no_grad():
        best = backward_bound(state, start, coef)
    best_alphas = {k: v.detach().clone() for k, v in alphas.items()}
    for _ in range(iterations):
        state.alphas = alphas
        lower = backward_bound(state, start, coef, use_alpha=True)
        detached = lower.detach()
        improved = detached > best
        best = torch.maximum(best, detached)
        for k, v in alphas.items():
            mask = improved.reshape(*improved.shape, *([1] * (v.dim() - 2)))
            best_alphas[k] = torch.where(mask, v.detach(), best_alphas[k])
        if stop is not None and stop(best):
            break
        if not lower.requires_grad:  # no alpha reaches this bound (stable or cut off)
            break
        optimizer.zero_grad()
        (-lower.sum()).backward()
        optimizer.step()
        _clip_(alphas, state)
    state.alphas = {}
    return best, best_alphas
