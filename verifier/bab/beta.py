"""beta-CROWN: alpha and beta optimised together for domains with ReLU split constraints.

A split fixes the sign of a Relu input z: active (z >= 0) or inactive (z <= 0). Written as
``s * z <= 0`` with s = +1 for an inactive and s = -1 for an active split, the constraint enters
the backward pass as a Lagrangian term ``beta * s * z`` at the value z (``backward_bound``'s
``extra``). For every beta >= 0 that term is <= 0 on the domain, so the bound stays sound and
optimisation (projected gradient ascent) can only tighten it; we keep the best iterate per
domain and spec row, in the loop alpha-CROWN uses (``bounds.engine.optimize.maximize``).

GenBaB splits of general nonlinear neurons restrict z to [l, p] or [p, u]; besides tightening
the relaxation, the constraints ``z - u <= 0`` and ``l - z <= 0`` enter the same way, as
``beta * (s z + r)`` with a constant r (:func:`split_terms`): without them the final bound
would not know that the split also cuts the input region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from bounds.engine.alpha import alpha_ranges, init_alphas
from bounds.engine.crown import backward_bound
from bounds.engine.deadline import checked
from bounds.engine.optimize import Group, Schedule, maximize
from bounds.engine.results import Intermediates, PassCache
from bounds.engine.work_dtype import cast_intermediates
from verifier.bab.cuts import CutSet, cut_terms, merge_extra


@dataclass(frozen=True)
class BetaOptions:
    iterations: int = 20
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    lr_cut: float = 0.05  # cut multipliers (``verifier.bab.cuts``)
    lr_decay: float = 0.98
    # pair loop: drop pairs that cannot reach their target at their recent rate of gain
    drop_hopeless: bool = False
    # pair loop: on a Linear/Relu chain, its optimisation passes by ``chain_guide`` (the
    # certified pass stays the engine's)
    chain_pass: bool = True


Term = tuple[str, torch.Tensor, torch.Tensor | None]  # (value, s [B,1,*], r [B,1,*] or None)


def split_terms(splits: dict[str, torch.Tensor], dtype,
                intervals: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> dict[str, Term]:
    """Split constraints ``s * z + r <= 0`` per beta key: ``key -> (value z, s, r)``.

    Relu values (codes +1 active / -1 inactive / 0 free): key = value, s = -code, r = None
    (0). Values in ``intervals`` (general nonlinear splits, GenBaB) carry flags: bit 1 = a
    split gave this domain its lower bound l (z >= l: key ``value|lo``, s = -1, r = l), bit 2
    its upper bound u (z <= u: key ``value|up``, s = +1, r = -u); (l, u) are the domain's
    bounds of z, so both constraints hold on it. Entries without the flag have s = r = 0.
    """
    terms: dict[str, Term] = {}
    for name, code in checked(splits.items()):
        if not bool(code.any()):
            continue
        if intervals is None or name not in intervals:
            terms[name] = (name, (-code.to(dtype)).unsqueeze(1), None)
            continue
        lower, upper = intervals[name]
        for bit, key, sign, bound in ((1, "|lo", -1.0, lower), (2, "|up", 1.0, -upper)):
            flag = (code & bit) != 0
            if bool(flag.any()):
                s_ = (sign * flag.to(dtype)).unsqueeze(1)
                r = torch.where(flag, bound.to(dtype), torch.zeros_like(bound, dtype=dtype))
                terms[name + key] = (name, s_, r.unsqueeze(1))
    return terms


def split_signs(splits: dict[str, torch.Tensor], dtype) -> dict[str, Term]:
    """Relu split constraints only (see :func:`split_terms`)."""
    return split_terms(splits, dtype)


def init_betas(terms: dict[str, Term], n_spec: int,
               warm: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """One beta tensor [B, S, *shape] per split key, warm-started where shapes match."""
    betas = {}
    for key, (_, s, _) in checked(terms.items()):
        shape = (s.shape[0], n_spec, *s.shape[2:])
        start = torch.zeros(shape, device=s.device, dtype=s.dtype)
        if warm is not None and key in warm and warm[key].shape == shape:
            start = warm[key].to(s.dtype) * (s != 0)
        betas[key] = start.detach().clone().requires_grad_(True)
    return betas


def split_extra(betas: dict[str, torch.Tensor], terms: dict[str, Term]):
    """``backward_bound`` extra coefficients (sum of beta * s per value) and the constant
    [B, S] sum of beta * r that must be added to its bound (None when all r are 0)."""
    extra: dict[str, torch.Tensor] = {}
    const = None
    for key, b in betas.items():
        value, s, r = terms[key]
        c = b * s
        extra[value] = extra[value] + c if value in extra else c
        if r is not None:
            k = (b * r).flatten(2).sum(-1)
            const = k if const is None else const + k
    return extra, const


def split_bound(inter: Intermediates, start: str, coef: torch.Tensor,
                alphas: Mapping[str, torch.Tensor], betas: dict[str, torch.Tensor],
                terms: dict[str, Term], cache: PassCache | None = None,
                cuts: tuple[CutSet, torch.Tensor] | None = None) -> torch.Tensor:
    """``backward_bound``'s lower bound [B, S] with the split constraints' Lagrangian terms
    (and constants); ``cuts``: (cuts, multipliers [B, S, K]) whose terms enter too
    (``verifier.bab.cuts``: then a bound on the counterexamples of the domains only)."""
    if not betas and cuts is None:
        return backward_bound(inter, start, coef, alphas=alphas, cache=cache).lower
    extra, const = split_extra(betas, terms)
    if cuts is not None:
        more, cut_const = cut_terms(cuts[0], inter.bounds, cuts[1])
        extra = merge_extra(extra, more)
        const = cut_const if const is None else const + cut_const
    lower = backward_bound(inter, start, coef, alphas=alphas, extra=extra, cache=cache).lower
    return lower if const is None else lower + const


@dataclass(frozen=True)
class Warm:
    """Warm starts of one alpha-beta optimisation: alphas per node, betas per split key."""

    alphas: dict | None = None
    betas: dict | None = None


def optimize_alpha_beta(inter: Intermediates, start: str, coef: torch.Tensor,
                        splits: dict[str, torch.Tensor], options: BetaOptions,
                        warm: Warm = Warm(), row_weight: torch.Tensor | None = None,
                        stop: Callable[[torch.Tensor], bool] | None = None,
                        deadline: float = float("inf"), intervals: dict | None = None,
                        cache: PassCache | None = None, work_dtype: torch.dtype | None = None):
    """Best lower bounds of coef . value(start) over alpha and beta >= 0.

    Returns (lower [B, S], alphas, betas). ``row_weight`` [B, S] (0/1) selects the rows whose
    sum is maximised (rows of already refuted disjuncts need no work); ``stop(best)`` ends the
    loop early. ``intervals``: value -> (lower, upper) [B, *shape] of the values with general
    nonlinear splits (see :func:`split_terms`).

    ``work_dtype`` (e.g. float32 for float64 bounds): the optimisation runs in that dtype,
    about twice as fast on CPU, and only picks the parameters; the bound returned is one pass
    in ``inter``'s own dtype with them (the parameters' range keeps any of them sound).
    """
    if work_dtype is None or work_dtype == inter.dtype:
        return _optimize(inter, start, coef, splits, options, warm, row_weight, stop,
                         deadline, intervals, cache)
    low = cast_intermediates(inter, work_dtype)
    low_intervals = None if intervals is None else {
        k: (lo.to(work_dtype), up.to(work_dtype)) for k, (lo, up) in intervals.items()}
    _, alphas, betas = _optimize(low, start, coef.to(work_dtype), splits, options, warm,
                                 row_weight, stop, deadline, low_intervals, PassCache())
    dt = inter.dtype
    alphas = {k: v.to(dt) for k, v in alphas.items()}
    betas = {k: v.to(dt) for k, v in betas.items()}
    with torch.no_grad():
        lower = split_bound(inter, start, coef, alphas, betas,
                            split_terms(splits, dt, intervals), cache)
    return lower, alphas, betas


def _optimize(inter: Intermediates, start: str, coef: torch.Tensor,
              splits: dict[str, torch.Tensor], options: BetaOptions, warm: Warm,
              row_weight: torch.Tensor | None, stop, deadline: float, intervals: dict | None,
              cache: PassCache | None):
    """:func:`optimize_alpha_beta` in ``inter``'s dtype."""
    n_spec = coef.shape[1]
    alphas = init_alphas(inter, n_spec, None if warm.alphas is None else {
        k: v.to(inter.dtype) for k, v in warm.alphas.items()})
    terms = split_terms(splits, inter.dtype, intervals)
    betas = init_betas(terms, n_spec, warm.betas)
    weight = torch.ones(coef.shape[:2], device=coef.device, dtype=coef.dtype) \
        if row_weight is None else row_weight.to(coef)

    def bound() -> torch.Tensor:
        return split_bound(inter, start, coef, alphas, betas, terms, cache)

    groups = [Group(alphas, options.lr_alpha, alpha_ranges(inter.graph, alphas)),
              Group(betas, options.lr_beta)]  # betas >= 0
    schedule = Schedule(options.iterations, options.lr_decay, stop, deadline, weight)
    best, (best_alphas, best_betas) = maximize(bound, groups, schedule)
    return best, best_alphas, best_betas
