"""alpha-beta optimisation of a ReLU BaB batch over its open (domain, spec row) pairs, dropping
each pair from the batch once it is proved.

Bounding a batch as [N domains, S rows] computes every row of every domain, although a row is
needed only where its disjunct is still open (on mnistfc 256x4 a domain a few splits deep has
3-4 of its 9 rows open), and every domain for every iteration, although most children are
proved within a few iterations of their 20. Here each open pair is a batch element of its own
(its domain's bounds and splits, its row's warm start), and pairs whose disjunct is proved
(by any of its rows) leave the batch between iterations. Each pair keeps its best iterate's
parameters, as ``bounds.engine.optimize.maximize`` does; the loop runs in ``work_dtype`` and
the bound returned is one pass in the bounds' own dtype with those parameters (any parameters
in range give a sound bound).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bounds.engine.adam import adam_update
from bounds.engine.alpha import alpha_ranges, init_alphas
from bounds.engine.deadline import check_deadline, checked, step_fits
from bounds.engine.results import Intermediates, PassCache
from bounds.rules.relu import carry_planes
from verifier.bab.beta import BetaOptions, cast_intermediates, init_betas, split_bound, split_terms
from verifier.bab.chain_guide import chain_bound, chain_state, linear_chain, usable
from verifier.bab.cuts import CutSet

# Drop proved pairs from the batch once at least this share of it is proved (each drop
# gathers the batch's bounds again).
DROP_SHARE = 0.1
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
# Hopeless pairs (``drop_hopeless``) are judged on the gains of this many last iterations.
HOPELESS_SPAN = 3
HOPELESS_AFTER = 3  # iterations before any pair is judged
# ``lazy``: pairs whose loop bound is this close (relative) to their target are certified too
# (the work dtype's rounding may leave a provable pair just below it)
CERTIFY_SLACK = 1e-3
Proved = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CUT_KEY = "cuts"  # the multipliers' entry in their parameter group


@dataclass(frozen=True)
class Pairs:
    """Open (domain, row) pairs of a batch: ``dom`` [P] and ``row`` [P] indices."""

    dom: torch.Tensor
    row: torch.Tensor

    def __len__(self) -> int:
        return self.dom.shape[0]


class _Active:
    """The pairs still optimised: their positions in the batch, bounds, parameters, moments."""

    def __init__(self, inter, coef, terms, params: list[dict], ranges: list[dict],
                 chain=None, cuts: CutSet | None = None):
        self.idx = torch.arange(coef.shape[0], device=coef.device)
        self.inter, self.coef, self.terms, self.cuts = inter, coef, terms, cuts
        # a Linear/Relu chain's passes (``chain_guide``): the chain and its pairs' planes
        self.chain = None if chain is None else (chain, chain_state(chain, inter))
        self.params, self.ranges = params, ranges
        self.moments = [{k: (torch.zeros_like(v), torch.zeros_like(v))
                         for k, v in checked(g.items())} for g in params]

    def keep(self, mask: torch.Tensor) -> None:
        self.idx, self.coef = self.idx[mask], self.coef[mask]
        if self.chain is not None:  # (its passes read the chain's state, not the bounds)
            self.chain = (self.chain[0], self.chain[1].select(mask))
        else:
            self._keep_bounds(mask)
        self.terms = {k: (v, s[mask], None if r is None else r[mask])
                      for k, (v, s, r) in self.terms.items()}
        self.cuts = None if self.cuts is None else self.cuts.select(mask)
        self.params = [{k: v.detach()[mask].clone().requires_grad_(True)
                        for k, v in checked(g.items())} for g in self.params]
        self.moments = [{k: (m[mask], s[mask]) for k, (m, s) in g.items()}
                        for g in self.moments]

    def _keep_bounds(self, mask: torch.Tensor) -> None:
        old, self.inter = self.inter, self.inter.select(mask)
        for value, x in old.bounds.items():  # Relu planes: those of the rows kept
            y = self.inter.bounds[value]
            if x.lower.shape[0] != len(mask) or y.lower is x.lower or y.upper is x.upper:
                continue  # (a bound shared by the batch, not selected)
            carry_planes((x.lower.unsqueeze(1), x.upper.unsqueeze(1)),
                         (y.lower.unsqueeze(1), y.upper.unsqueeze(1)), mask)

    def bound(self, start: str, cache: PassCache) -> torch.Tensor:
        """The pairs' lower bounds [P] with the current parameters."""
        if self.chain is not None:
            return chain_bound(*self.chain, self.coef, self.params[0], self.params[1],
                               self.terms)[:, 0]
        cuts = None if self.cuts is None else (self.cuts, self.params[2][CUT_KEY])
        return split_bound(self.inter, start, self.coef, self.params[0], self.params[1],
                           self.terms, cache, cuts)[:, 0]

    def step(self, lrs: list[float], t: int) -> None:
        """One Adam step (bias-corrected, as ``bounds.engine.adam``) and the projection."""
        with torch.no_grad():
            for g, mom, lr, ranges in zip(self.params, self.moments, lrs, self.ranges,
                                          strict=True):
                live = [k for k, p in g.items() if p.grad is not None]
                adam_update([g[k] for k in live], [g[k].grad for k in live],
                            [mom[k][0] for k in live], [mom[k][1] for k in live], t, lr,
                            ADAM_BETAS, ADAM_EPS)
                for k in live:
                    g[k].grad = None
                    low, high = ranges.get(k, (0.0, math.inf))  # betas >= 0
                    g[k].clamp_(low, high)


def optimize_pairs(inter: Intermediates, start: str, coef: torch.Tensor,
                   splits: dict[str, torch.Tensor], pairs: Pairs, warm: tuple[dict, dict],
                   options: BetaOptions, proved: Proved,
                   deadline: float = math.inf, work_dtype: torch.dtype | None = None,
                   targets: torch.Tensor | None = None, lazy: bool = False,
                   cuts: CutSet | None = None):
    """Lower bounds [P] of coef[dom, row] . value(start) on each pair's domain, optimised over
    alpha and beta >= 0; returns (lower [P], alphas, betas, guide [P]), parameters
    [P, 1, ...] in ``inter``'s dtype, ``guide`` the loop's own best bounds (``work_dtype``:
    no bound, an estimate for ordering). ``coef`` [N, S, *out]; ``warm``: (alphas, betas)
    [N, S, ...] per node / split key. ``proved(idx, best)`` -> [len(idx)] bool: which of the
    pairs ``idx`` are proved when their current best bounds are ``best`` (their disjunct
    refuted).

    ``targets`` [P] (with ``options.drop_hopeless``): the bound at which a pair's row refutes
    its disjunct; a pair whose best bound, improving at its rate of the last HOPELESS_SPAN
    iterations for every iteration left, would still end below it leaves the batch too (its
    children get split instead; the gains of an optimisation slow down, so the projection
    overrates them and drops only pairs that cannot make it).

    ``lazy`` (with ``targets``): the bound pass in ``inter``'s dtype (``_certify``) runs only
    for the pairs whose loop bound reaches their target (less CERTIFY_SLACK); the others get
    -inf (no bound: the caller keeps what it knew) and their ``guide``. That pass was 6.6 of
    53 CPU s of resnet_2b prop_20's steps, although only a proof needs a sound bound.

    ``cuts`` (mask per domain): nogoods as cutting planes (``verifier.bab.cuts``), their
    multipliers optimised with the rest from 0 (a pair's bound is then one on the
    counterexamples of its domain: what a proof needs)."""
    dt = work_dtype or inter.dtype
    d, r = pairs.dom, pairs.row
    mine = inter.select(d)
    low = mine if dt == inter.dtype else cast_intermediates(mine, dt)
    pair_splits = {k: v[d] for k, v in checked(splits.items())}
    pair_coef = coef[d, r].unsqueeze(1)
    alphas = init_alphas(low, 1, {k: v[d, r].unsqueeze(1).to(dt)
                                  for k, v in checked(warm[0].items())})
    terms = split_terms(pair_splits, dt)
    betas = init_betas(terms, 1, {k: v[d, r].unsqueeze(1) for k, v in checked(warm[1].items())})
    groups, ranges = [alphas, betas], [alpha_ranges(inter.graph, alphas), {}]
    lrs = [options.lr_alpha, options.lr_beta]
    pair_cuts = None if cuts is None else cuts.select(d)
    if pair_cuts is not None:  # multipliers >= 0, from 0
        groups.append({CUT_KEY: torch.zeros((len(pairs), 1, len(cuts)), dtype=dt,
                                            device=coef.device, requires_grad=True)})
        ranges.append({})
        lrs.append(options.lr_cut)
    best_params = [{k: v.detach().clone() for k, v in checked(g.items())} for g in groups]
    # (the chain's passes carry no cut terms)
    chain = linear_chain(inter.graph) if options.chain_pass and cuts is None else None
    act = _Active(low, pair_coef.to(dt), terms, groups, ranges,
                  chain if usable(chain, low, start, alphas, terms) else None,
                  None if pair_cuts is None else pair_cuts.to(dt))
    best = torch.full((len(pairs),), -math.inf, dtype=dt, device=coef.device)
    cache = PassCache()
    history: list[torch.Tensor] = []  # best bounds [P] after each of the last iterations
    hopeless = options.drop_hopeless and targets is not None
    for it in range(max(1, options.iterations)):
        check_deadline()
        began = time.monotonic()
        lower = act.bound(start, cache)
        pass_s = time.monotonic() - began
        better = lower.detach() > best[act.idx]
        at = act.idx[better]
        best[at] = lower.detach()[better]
        for g, kept in zip(act.params, best_params, strict=True):
            for k, v in g.items():
                kept[k][at] = v.detach()[better]
        done = proved(act.idx, best[act.idx])
        if hopeless:
            history = [*history[-(HOPELESS_SPAN - 1):], best.clone()]
            if len(history) == HOPELESS_SPAN and it + 1 >= HOPELESS_AFTER:
                done = done | _hopeless(history, targets, act.idx,
                                        options.iterations - it - 1)
        # autograd's backward cannot read the clock: no step that would end past the
        # deadline (the best iterate so far gives a sound bound)
        # (no parameter reaches a bound that the relaxations do not shape: a step op
        # concretised between them and the output)
        if (bool(done.all()) or it + 1 >= options.iterations or not lower.requires_grad
                or not step_fits(pass_s, deadline)):
            break
        (-lower[~done].sum()).backward()
        act.step(lrs, it + 1)
        lrs = [lr * options.lr_decay for lr in lrs]
        if int(done.sum()) >= max(1, DROP_SHARE * len(done)):
            act.keep(~done)
            cache = PassCache()
    if not (lazy and targets is not None):
        return (*_certify(mine, start, pair_coef, pair_splits, best_params, pair_cuts), best)
    need = best >= targets.to(dt) - CERTIFY_SLACK * (1 + targets.to(dt).abs())
    lower = torch.full((len(pairs),), -math.inf, dtype=inter.dtype, device=coef.device)
    alphas = {k: v.to(inter.dtype) for k, v in best_params[0].items()}
    betas = {k: v.to(inter.dtype) for k, v in best_params[1].items()}
    if bool(need.any()):
        sure, _, _ = _certify(mine.select(need), start, pair_coef[need],
                              {k: v[need] for k, v in pair_splits.items()},
                              [{k: v[need] for k, v in g.items()} for g in best_params],
                              None if pair_cuts is None else pair_cuts.select(need))
        lower[need] = sure
    return lower, alphas, betas, best


def _hopeless(history: list[torch.Tensor], targets: torch.Tensor, idx: torch.Tensor,
              left: int) -> torch.Tensor:
    """[len(idx)] bool: pairs whose best bound, gaining per iteration what it gained on
    average over ``history`` for ``left`` more iterations, stays below its target."""
    now, then = history[-1][idx], history[0][idx]
    rate = (now - then).clamp(min=0) / (len(history) - 1)
    return now + left * rate < targets[idx].to(now)


def _certify(inter: Intermediates, start: str, coef: torch.Tensor, splits: dict,
             params: list[dict], cuts: CutSet | None = None):
    """One pass in ``inter``'s dtype with the parameters found: the sound bounds [P]."""
    dt = inter.dtype
    alphas = {k: v.to(dt) for k, v in params[0].items()}
    betas = {k: v.to(dt) for k, v in params[1].items()}
    terms = split_terms(splits, dt)  # (a subset of the pairs may have no split in a layer)
    with torch.no_grad():
        lower = split_bound(inter, start, coef, alphas,
                            {k: v for k, v in betas.items() if k in terms}, terms,
                            cuts=None if cuts is None else (cuts.to(dt),
                                                            params[2][CUT_KEY].to(dt)))
    return lower[:, 0], alphas, betas
