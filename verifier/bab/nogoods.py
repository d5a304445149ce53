"""Learned nogoods for the ReLU-split search: cuts inferred from verified sub-domains.

A literal is a Relu input z with a closed phase: active (z >= 0) or inactive (z <= 0). A
nogood is a set of literals that no counterexample satisfies together: no x in the region box
meets the property's violation with all of them. In the spirit of BICCOS (Zhou et al. 2024),
with our own code:

* **Learning.** A domain the search verifies (every disjunct refuted) has split set S: S is a
  nogood. It is strengthened before it is kept, by greedy deletion (``NogoodLearner``): a
  smaller set S' (literals with zero beta dropped first) is bounded afresh -- intermediate
  bounds from the root's, clamped by S' only, CROWN over them, then alpha-beta with the
  domain's warm start, no refuted disjunct inherited -- and kept only if that bound refutes
  every disjunct. Only strengthened sets are kept: in a tree a path is never met again.
* **Pruning.** A domain whose literals contain a nogood holds no counterexample: it is dropped
  unbounded. A neuron the domain's intermediate bounds show stable counts as a literal of its
  phase (l >= 0: every point of the domain has z >= 0).
* **Unit propagation.** If a domain D contains all literals of a nogood N but one, l, on a
  free neuron, the part of D in phase l lies inside N's region and holds no counterexample;
  every counterexample of D has z strictly on the other side, inside the closed opposite
  phase: D is split there for free. Two nogoods forcing opposite phases on one neuron leave
  no counterexample (z > 0 and z < 0): D is dropped. A forced phase only clamps D's bounds
  of z (as a split does), and the bound of D then carries the split's beta term as usual.

Nothing here makes a bound looser or calls a domain verified without a nogood whose own
verification was a sound bound; a wrong nogood is the only way to a wrong ``unsat``, which the
tests check on sampled activation patterns and exact LPs. The nogoods live in the coordinates
of the search's (possibly narrowed) net and are dropped with the search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from bounds.engine.rounding import final_margin
from bounds.engine.spec_bounds import ibp_lower
from verifier.bab.branching import SplitLayer
from verifier.bab.cuts import CutSet, cut_set
from verifier.bab.neuron_domains import NeuronDomains

BETA_ZERO = 1e-6  # a beta at most this is "zero": its literal is tried without
MATCH_CHUNK = 2048  # nogoods matched against a batch at a time (memory: N x chunk x length)


@dataclass
class NogoodStats:
    learned: int = 0
    attempts: int = 0  # strengthened sets bounded afresh
    pruned: int = 0  # domains dropped unbounded
    units: int = 0  # phases forced by unit propagation
    cut_uses: int = 0  # domains bounded with some nogood as a cut
    learn_s: float = 0.0
    match_s: float = 0.0
    literals: int = 0  # total literals of the kept nogoods (for the mean length)


class Nogoods:
    """Nogoods over the neurons of ``layers`` (global indices, as ``branching.decode``)."""

    def __init__(self, layers: list[SplitLayer], cap: int = 20_000):
        self.layers = layers
        self.sizes = [lay.numel for lay in layers]
        self.cap = cap
        self.idx = torch.zeros((0, 1), dtype=torch.long)  # [K, L] neuron, padded with 0
        self.sgn = torch.zeros((0, 1), dtype=torch.int8)  # [K, L] phase +-1, 0 = padding
        self.stats = NogoodStats()

    def __len__(self) -> int:
        return self.idx.shape[0]

    # ---- domain codes ---------------------------------------------------------------------
    def codes(self, dom: NeuronDomains) -> torch.Tensor:
        """Split codes [N, T] (+1 active, -1 inactive, 0 free) over all neurons."""
        n = len(dom)
        return torch.cat([dom.splits[lay.value].reshape(n, -1) for lay in self.layers], 1)

    def effective(self, dom: NeuronDomains, bounds=None) -> torch.Tensor:
        """Codes with the neurons that the domain's bounds show stable as literals too
        (``bounds``: value -> Interval of the split layers' inputs; default the domain's)."""
        n, parts = len(dom), []
        for lay in self.layers:
            code = dom.splits[lay.value].reshape(n, -1)
            lo = (dom.lower[lay.value] if bounds is None else bounds[lay.value].lower)
            up = (dom.upper[lay.value] if bounds is None else bounds[lay.value].upper)
            lo, up = lo.reshape(n, -1), up.reshape(n, -1)
            stable = torch.where(lo >= 0, 1, torch.where(up <= 0, -1, 0)).to(torch.int8)
            parts.append(torch.where(code != 0, code, stable))
        return torch.cat(parts, 1)

    # ---- the store --------------------------------------------------------------------------
    def add(self, codes: torch.Tensor) -> int:
        """Keep the literal sets ``codes`` [M, T] (each must be a nogood); returns how many
        were new."""
        codes = codes.cpu()
        if len(codes) == 0 or len(self) >= self.cap:
            return 0
        codes = torch.unique(codes, dim=0)[: self.cap - len(self)]
        length = (codes != 0).sum(1)
        width = max(int(length.max()), self.idx.shape[1], 1)
        order = torch.argsort((codes == 0).to(torch.int8), dim=1, stable=True)[:, :width]
        sgn = torch.gather(codes, 1, order)
        idx = torch.where(sgn != 0, order, torch.zeros_like(order))
        pad = width - self.idx.shape[1]
        old_idx = torch.nn.functional.pad(self.idx, (0, pad))
        old_sgn = torch.nn.functional.pad(self.sgn, (0, pad))
        self.idx, self.sgn = torch.cat([old_idx, idx]), torch.cat([old_sgn, sgn])
        self.stats.learned += len(codes)
        self.stats.literals += int(length.sum())
        return len(codes)

    def match(self, eff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(contained [N]: some nogood's literals all hold, forced [N, T] int8: phases unit
        propagation forces on free neurons, +-1, or 2 where two nogoods force opposite
        phases)."""
        n, t = eff.shape
        contained = torch.zeros(n, dtype=torch.bool)
        plus = torch.zeros((n, t), dtype=torch.bool)
        minus = torch.zeros((n, t), dtype=torch.bool)
        for start in range(0, len(self), MATCH_CHUNK):
            idx, sgn = self.idx[start:start + MATCH_CHUNK], self.sgn[start:start + MATCH_CHUNK]
            lit = sgn != 0
            got = eff[:, idx]  # [N, K, L]
            miss = lit & (got != sgn)
            n_miss = miss.sum(-1)
            contained |= (n_miss == 0).any(1)
            unit = (n_miss == 1) & (miss & (got == 0)).any(-1)  # [N, K]
            d, k = unit.nonzero(as_tuple=True)
            if len(d) == 0:
                continue
            pos = (miss[d, k] & (got[d, k] == 0)).to(torch.int8).argmax(1)
            neuron, phase = idx[k, pos], -sgn[k, pos]  # the opposite phase is forced
            plus[d[phase > 0], neuron[phase > 0]] = True
            minus[d[phase < 0], neuron[phase < 0]] = True
        forced = plus.to(torch.int8) - minus.to(torch.int8)
        forced[plus & minus] = 2
        return contained, forced

    # ---- use in the search ----------------------------------------------------------------
    def prune(self, dom: NeuronDomains) -> NeuronDomains:
        """The domains that contain no nogood."""
        if len(self) == 0 or len(dom) == 0:
            return dom
        began = time.monotonic()
        contained, _ = self.match(self.effective(dom).cpu())
        self.stats.match_s += time.monotonic() - began
        if not bool(contained.any()):
            return dom
        self.stats.pruned += int(contained.sum())
        return dom.select((~contained).to(dom.margin.device))

    def propagate(self, kids: NeuronDomains, reuse, rounds: int = 3):
        """Prune ``kids`` and force the phases unit propagation implies (a few rounds); returns
        (kids, reuse) with ``reuse`` (per-domain first recomputed layer, or a bool) lowered to
        the layer of any forced phase."""
        if len(self) == 0 or len(kids) == 0:
            return kids, reuse
        began = time.monotonic()
        ends = torch.cumsum(torch.tensor(self.sizes), 0)
        for _ in range(rounds):
            contained, forced = self.match(self.effective(kids).cpu())
            drop = contained | (forced == 2).any(1)
            if bool(drop.any()):
                self.stats.pruned += int(drop.sum())
                keep = ~drop
                kids, forced = kids.select(keep.to(kids.margin.device)), forced[keep]
                if isinstance(reuse, torch.Tensor):
                    reuse = reuse[keep.to(reuse.device)]
            d, neuron = forced.nonzero(as_tuple=True)
            if len(d) == 0:
                break
            self.stats.units += len(d)
            self._force(kids, d, neuron, forced[d, neuron])
            if isinstance(reuse, torch.Tensor):
                layer = torch.searchsorted(ends, neuron, right=True).to(reuse)
                low = torch.full_like(reuse, torch.iinfo(reuse.dtype).max)
                low = low.scatter_reduce(0, d.to(reuse.device), layer, "amin")
                reuse = torch.minimum(reuse, low)
        self.stats.match_s += time.monotonic() - began
        return kids, reuse

    def _force(self, dom: NeuronDomains, d, neuron, phase) -> None:
        """Split neurons (global) of domains ``d`` to ``phase`` in place, as a split does."""
        start = 0
        dev = dom.margin.device
        for lay, size in zip(self.layers, self.sizes, strict=True):
            m = (neuron >= start) & (neuron < start + size)
            if bool(m.any()):
                r, q, ph = d[m].to(dev), (neuron[m] - start).to(dev), phase[m].to(dev)
                n = len(dom)
                dom.splits[lay.value].reshape(n, -1)[r, q] = ph
                lo, up = dom.lower[lay.value].reshape(n, -1), dom.upper[lay.value].reshape(n, -1)
                lo[r, q] = torch.where(ph > 0, lo[r, q].clamp(min=0), lo[r, q])
                up[r, q] = torch.where(ph < 0, up[r, q].clamp(max=0), up[r, q])
            start += size


class NogoodLearner:
    """The search's side of nogoods: learns from the domains ``bound`` verifies (strengthened,
    see the module docstring), prunes popped batches and propagates into children.

    Strengthening is greedy deletion in chunks, spread over the search's steps: each verified
    domain waits in ``pending`` with its literals still to try, ordered by beta (zero first),
    and a chunk size (at first the number of zero-beta literals). Each attempt bounds the set
    without the next chunk: verified, the smaller set is kept (a nogood) and the chunk's
    literals are gone; not, the chunk halves, and a single literal that cannot go stays.
    """

    def __init__(self, iterations: int, max_attempts: int = 64, time_share: float = 0.25,
                 max_pending: int = 256, tries: int = 8, probation: int = 128,
                 cuts: bool = False):
        self.iterations, self.max_attempts = iterations, max_attempts
        self.use_cuts = cuts  # the nogoods also enter bounds as cuts (``cuts_for``)
        # learning (one more bound per attempt) stops while it has taken more than this
        # share of the search's time since the root
        self.time_share, self.max_pending, self.tries = time_share, max_pending, tries
        # after this many attempts learning goes on only while each nogood learned has been
        # used (a domain pruned or a phase forced) once on average
        self.probation = probation
        self.store: Nogoods | None = None  # made at the root (the search's layers by then)
        self.root: tuple[dict, dict] | None = None
        self.pending: _Pending | None = None
        self._busy, self._start = False, time.monotonic()

    def observe(self, search, out: NeuronDomains, keep: torch.Tensor) -> None:
        """``bound``'s hook: ``out`` its bounded domains, ``keep`` [N] the ones still open."""
        if self._busy:
            return
        if self.store is None:  # the first bound is the root's: its bounds and layers
            self.store = Nogoods(search.layers)
            self.root = ({k: v[:1] for k, v in out.lower.items()},
                         {k: v[:1] for k, v in out.upper.items()})
            self._start = time.monotonic()
            return
        done = ~keep & torch.isfinite(out.bound).any(1)  # (empty intervals: not learned from)
        room = self.max_pending - (0 if self.pending is None else len(self.pending))
        if bool(done.any()) and room > 0 and self._same_keys(out):
            self._enqueue(out.select(done.nonzero().flatten()[:room]))
        s = self.store.stats
        if self.pending is None or s.learn_s > self.time_share * (time.monotonic() - self._start):
            return
        if s.attempts >= self.probation and s.pruned + s.units + s.cut_uses < s.learned:
            return  # the nogoods found so far are seldom used: learning stops paying
        began = time.monotonic()
        self._busy = True
        try:
            self._attempt(search)
        finally:
            self._busy = False
            self.store.stats.learn_s += time.monotonic() - began

    def _same_keys(self, dom: NeuronDomains) -> bool:
        """The warm starts of ``dom`` stack with the pending ones'."""
        if self.pending is None:
            return True
        old = self.pending.dom
        return old.alphas.keys() == dom.alphas.keys() and old.betas.keys() == dom.betas.keys()

    def _enqueue(self, dom: NeuronDomains) -> None:
        codes = self.store.codes(dom).cpu()
        beta = torch.cat([_beta_size(dom, lay, len(dom)) for lay in self.store.layers], 1)
        todo = codes != 0
        zero = (todo & (beta <= BETA_ZERO)).sum(1)
        chunk = torch.maximum(zero, todo.sum(1) // 2).clamp(min=1)
        rank = torch.where(todo, beta, torch.full_like(beta, math.inf))
        item = _Pending(dom, codes, todo, rank, chunk, torch.zeros(len(dom), dtype=torch.long))
        self.pending = item if self.pending is None else self.pending.extend(item)

    def _attempt(self, search) -> None:
        """One deletion attempt for up to ``max_attempts`` pending sets."""
        p, n = self.pending, min(self.max_attempts, len(self.pending))
        head = torch.arange(n)
        order = torch.argsort(p.rank[head], dim=1, stable=True)
        pos = torch.empty_like(order)
        pos.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
        drop = (pos < p.chunk[head].unsqueeze(1)) & p.todo[head]
        cand = torch.where(drop, torch.zeros_like(p.codes[head]), p.codes[head])
        self.store.stats.attempts += n
        ok = verified_on(search, self._fresh(p.dom.select(head.to(p.dom.margin.device)), cand),
                         self.iterations).cpu()
        self.store.add(cand[ok])
        p.codes[head] = torch.where(ok.unsqueeze(1), cand, p.codes[head])
        single = ~ok & (p.chunk[head] == 1)
        p.todo[head] &= ~(drop & (ok | single).unsqueeze(1))
        p.chunk[head] = torch.where(ok | single, p.chunk[head], p.chunk[head] // 2).clamp(min=1)
        p.rank[head] = torch.where(p.todo[head], p.rank[head], math.inf)
        p.tries[head] += 1
        alive = p.todo.any(1) & (p.tries < self.tries)
        self.pending = p.select(alive) if bool(alive.any()) else None

    def _fresh(self, dom: NeuronDomains, cand: torch.Tensor) -> NeuronDomains:
        """Domains with splits ``cand`` [M, T] from the root's bounds: no bound, nothing
        refuted; alphas and betas of ``dom`` as warm starts."""
        n, store = len(dom), self.store
        lower, upper = self.root
        fresh = NeuronDomains({}, {}, {}, dom.alphas, dom.betas,
                              torch.full_like(dom.bound, -math.inf),
                              torch.full_like(dom.margin, -math.inf),
                              torch.zeros_like(dom.refuted), dom.candidates, dom.depth)
        start = 0
        for lay, size in zip(store.layers, store.sizes, strict=True):
            code = cand[:, start:start + size].reshape(n, *lay.shape).to(torch.int8)
            lo = lower[lay.value].expand(n, *lay.shape).clone()
            up = upper[lay.value].expand(n, *lay.shape).clone()
            fresh.splits[lay.value] = code.to(lo.device)
            fresh.lower[lay.value] = torch.where(code > 0, lo.clamp(min=0), lo)
            fresh.upper[lay.value] = torch.where(code < 0, up.clamp(max=0), up)
            start += size
        return fresh

    def stats(self) -> dict:
        s = self.store.stats if self.store is not None else NogoodStats()
        return {"nogoods_learned": s.learned, "nogood_attempts": s.attempts,
                "nogood_pruned": s.pruned, "nogood_units": s.units,
                "nogood_cut_domains": s.cut_uses,
                "nogood_mean_length": s.literals / max(1, s.learned),
                "nogood_learn_s": round(s.learn_s, 3), "nogood_match_s": round(s.match_s, 3)}

    def prune(self, dom: NeuronDomains) -> NeuronDomains:
        return dom if self.store is None else self.store.prune(dom)

    def cuts_for(self, dom: NeuronDomains, bounds, dtype) -> CutSet | None:
        """The nogoods that can tighten the bounds of ``dom`` (its splits, its Relu inputs'
        intermediate ``bounds``) as cuts (``verifier.bab.cuts``), or None."""
        if not self.use_cuts or self.store is None or len(self.store) == 0 or self._busy:
            return None
        began = time.monotonic()
        store = self.store
        cuts = cut_set(store.layers, store.idx, store.sgn, store.effective(dom, bounds).cpu(),
                       dtype, dom.margin.device)
        store.stats.match_s += time.monotonic() - began
        if cuts is not None:
            store.stats.cut_uses += int(cuts.mask.any(1).sum())
        return cuts

    def propagate(self, kids: NeuronDomains, reuse):
        return (kids, reuse) if self.store is None else self.store.propagate(kids, reuse)


class NoNogoods:
    """The search's hooks with nogoods off: each does nothing."""

    def observe(self, search, out: NeuronDomains, keep: torch.Tensor) -> None:
        return None

    def prune(self, dom: NeuronDomains) -> NeuronDomains:
        return dom

    def propagate(self, kids: NeuronDomains, reuse):
        return kids, reuse

    def cuts_for(self, dom: NeuronDomains, bounds, dtype) -> None:
        return None

    def stats(self) -> dict:
        return {}


def nogood_hooks(on: bool, iterations: int, cuts: bool = False) -> NogoodLearner | NoNogoods:
    """A learner (``on``: Relu-only nets with ``nogoods``; ``cuts``: its nogoods enter the
    bounds as cuts too) or hooks that do nothing."""
    return NogoodLearner(iterations, cuts=cuts) if on else NoNogoods()


@dataclass
class _Pending:
    """Verified sets being strengthened: the domains (warm starts), their current nogood
    ``codes`` [P, T], literals still to try ``todo``, their order ``rank`` (beta size), the
    next chunk size and the attempts made."""

    dom: NeuronDomains
    codes: torch.Tensor
    todo: torch.Tensor
    rank: torch.Tensor
    chunk: torch.Tensor
    tries: torch.Tensor

    def __len__(self) -> int:
        return self.codes.shape[0]

    def select(self, keep: torch.Tensor) -> _Pending:
        dom = self.dom.select(keep.to(self.dom.margin.device))
        return _Pending(dom, *(t[keep] for t in (self.codes, self.todo, self.rank, self.chunk,
                                                 self.tries)))

    def extend(self, other: _Pending) -> _Pending:
        self.dom.extend(other.dom)
        return _Pending(self.dom, *(torch.cat([a, b]) for a, b in zip(
            (self.codes, self.todo, self.rank, self.chunk, self.tries),
            (other.codes, other.todo, other.rank, other.chunk, other.tries), strict=True)))


def _beta_size(dom: NeuronDomains, lay: SplitLayer, n: int) -> torch.Tensor:
    """max over spec rows of |beta| per neuron [N, numel] (0 where the layer has none)."""
    beta = dom.betas.get(lay.value)
    if beta is None:
        return torch.zeros((n, lay.numel))
    return beta.abs().amax(1).reshape(n, -1).float().cpu()


def verified_on(search, dom: NeuronDomains, iterations: int) -> torch.Tensor:
    """[N] bool: the search's bound refutes every disjunct on ``dom`` (or its intervals are
    empty). Intermediate bounds are recomputed (CROWN, the given ones intersected in) and
    nothing of ``dom``'s bound or refuted disjuncts is taken as proved."""
    n, p = len(dom), search.problem
    inter, cache = search._intermediates(dom, False)
    coef, _, rhs = search._spec(n)
    infeasible = inter.infeasible
    weight = search._open_rows(dom.refuted) & ~infeasible.unsqueeze(1)
    lower = ibp_lower(inter.bounds[search.out_name], coef)
    optimise = search._by_pairs if search.sign_only and search.options.pair_batches \
        else search._by_rows
    lower = optimise(dom, (inter, cache), lower, weight,
                     replace(search.options.beta, iterations=iterations))[0]
    lower = torch.where(infeasible.unsqueeze(1), torch.full_like(lower, math.inf),
                        final_margin(lower - rhs))
    return p.refuted_disjuncts(lower).all(1) | infeasible
