"""beta-CROWN: alpha and beta optimised together for domains with ReLU split constraints.

A split fixes the sign of a Relu input z: active (z >= 0) or inactive (z <= 0). Written as
``s * z <= 0`` with s = +1 for an inactive and s = -1 for an active split, the constraint enters
the backward pass as a Lagrangian term ``beta * s * z`` at the value z (``backward_bound``'s
``extra``). For every beta >= 0 that term is <= 0 on the domain, so the bound stays sound and
optimisation (projected gradient ascent) can only tighten it; we keep the best iterate per
domain and spec row, as alpha-CROWN does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bounds.engine.alpha import _clip_, init_alphas
from bounds.engine.crown import BoundState, backward_bound


@dataclass(frozen=True)
class BetaOptions:
    iterations: int = 20
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    lr_decay: float = 0.98


def split_signs(splits: dict[str, torch.Tensor], dtype) -> dict[str, torch.Tensor]:
    """s per split neuron ([B, 1, *shape]): +1 inactive, -1 active, 0 free (split codes +-1/0)."""
    return {name: (-s.to(dtype)).unsqueeze(1) for name, s in splits.items() if bool(s.any())}


def init_betas(signs: dict[str, torch.Tensor], n_spec: int,
               warm: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """One beta tensor [B, S, *shape] per split value, warm-started where shapes match."""
    betas = {}
    for name, s in signs.items():
        shape = (s.shape[0], n_spec, *s.shape[2:])
        start = torch.zeros(shape, device=s.device, dtype=s.dtype)
        if warm is not None and name in warm and warm[name].shape == shape:
            start = warm[name].to(s.dtype) * (s != 0)
        betas[name] = start.detach().clone().requires_grad_(True)
    return betas


def split_extra(betas: dict[str, torch.Tensor], signs: dict[str, torch.Tensor]) -> dict:
    """``backward_bound`` extra coefficients: beta * s at each split value."""
    return {name: b * signs[name] for name, b in betas.items()}


def _keep_best(best: dict, current: dict, improved: torch.Tensor) -> None:
    for k, v in current.items():
        mask = improved.reshape(*improved.shape, *([1] * (v.dim() - 2)))
        best[k] = torch.where(mask, v.detach(), best[k])


def optimize_alpha_beta(state: BoundState, start: str, coef: torch.Tensor,
                        splits: dict[str, torch.Tensor], options: BetaOptions,
                        warm_alphas: dict | None = None, warm_betas: dict | None = None,
                        row_weight: torch.Tensor | None = None,
                        stop: Callable[[torch.Tensor], bool] | None = None,
                        deadline: float = float("inf")):
    """Best lower bounds of coef . value(start) over alpha and beta >= 0.

    Returns (lower [B, S], alphas, betas). ``row_weight`` [B, S] (0/1) selects the rows whose
    sum is maximised (rows of already refuted disjuncts need no work); ``stop(best)`` ends the
    loop early.
    """
    n_spec = coef.shape[1]
    alphas = init_alphas(state, n_spec, warm_alphas)
    signs = split_signs(splits, state.dtype)
    betas = init_betas(signs, n_spec, warm_betas)
    weight = torch.ones(coef.shape[:2], device=coef.device, dtype=coef.dtype) \
        if row_weight is None else row_weight.to(coef)
    groups = [g for g in ({"params": list(alphas.values()), "lr": options.lr_alpha},
                          {"params": list(betas.values()), "lr": options.lr_beta}) if g["params"]]
    optimizer = torch.optim.Adam(groups) if groups else None
    sched = torch.optim.lr_scheduler.ExponentialLR(optimizer, options.lr_decay) \
        if optimizer is not None else None
    best = None
    best_alphas = {k: v.detach().clone() for k, v in alphas.items()}
    best_betas = {k: v.detach().clone() for k, v in betas.items()}
    for it in range(max(1, options.iterations)):
        state.alphas = alphas
        lower = backward_bound(state, start, coef, use_alpha=bool(alphas),
                               extra=split_extra(betas, signs) if betas else None)
        detached = lower.detach()
        improved = torch.ones_like(detached, dtype=torch.bool) if best is None \
            else detached > best
        best = detached.clone() if best is None else torch.maximum(best, detached)
        _keep_best(best_alphas, alphas, improved)
        _keep_best(best_betas, betas, improved)
        last = it + 1 >= options.iterations or optimizer is None
        if last or (stop is not None and stop(best)) or time.monotonic() >= deadline:
            break
        optimizer.zero_grad()
        (-torch.where(weight > 0, lower, 0).sum()).backward()
        optimizer.step()
        sched.step()
        _clip_(alphas, state)
        with torch.no_grad():
            for b in betas.values():
                b.clamp_(min=0)
    state.alphas = {}
    return best, best_alphas, best_betas
