"""Branch-and-bound by splitting neurons, for any input size: sign splits of unstable Relus
(beta-CROWN style) and, with GenBaB, interval splits of general nonlinear neurons (Sigmoid,
Tanh, Sin, GELU, ...) and of products' operands, in one search.

Each step takes the worst-bounded domains, picks one unstable neuron per domain (BaBSR-like
score, optionally filtered strong branching), and bounds both children in one batch: their
intermediate bounds start from the parent's with the split applied (an empty interval proves
the child infeasible), and their final bound optimises alpha and beta jointly, warm-started from
the parent. A child's bound is never worse than its parent's (the parent's bound holds on it
too). Counterexamples come from the input points that minimise the domains' linear bounds and
from a short attack on the region box every few steps; onnxruntime validates them before sat.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from bounds.engine.budget import free_bytes
from bounds.engine.deadline import DeadlineExceeded, check_deadline, engine_deadline, time_left
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import Intermediates, PassCache
from bounds.engine.rounding import final_margin
from bounds.engine.spec_bounds import ibp_lower
from bounds.engine.work_dtype import fits
from bounds.registry import rules
from bounds.rules.common import KINK_ALPHA
from bounds.rules.rewrites import bound_graph
from bounds.types import Interval
from verifier.bab.attack_schedule import AttackSchedule
from verifier.bab.beta import (
    BetaOptions,
    Warm,
    cast_intermediates,
    optimize_alpha_beta,
    split_bound,
    split_extra,
    split_terms,
)
from verifier.bab.branching import babsr_scores, layer_output_coefs, pick_fsb, top_candidates
from verifier.bab.chain_guide import (
    chain_bound,
    chain_coefs,
    chain_state,
    linear_chain,
    usable,
)
from verifier.bab.cut_trees import CUT_TREES, grow_cut_trees
from verifier.bab.cuts import relu_outputs
from verifier.bab.domain_queue import DomainQueue
from verifier.bab.input_split import BabOutcome
from verifier.bab.neuron_domains import (
    NeuronDomains,
    beta_slots,
    child_intermediates,
    merge_pairs,
    merge_rows,
    split_domains,
    split_more,
)
from verifier.bab.neuron_options import (
    GENERAL_FSB_CANDIDATES,
    LAST_STEP_MIN,
    QUEUE_MEMORY_SHARE,
    RELU_FSB_CANDIDATES,
    NeuronSplitOptions,
    _Counters,
    expected_kids,
    fc_relu_chain,
    has_conv_split_layer,
)
from verifier.bab.nogoods import nogood_hooks
from verifier.bab.nonlinear import SplitPoints, split_layers, split_scores
from verifier.bab.pair_loop import Pairs, optimize_pairs
from verifier.bab.problem import RegionProblem
from verifier.bab.progress import Progress
from verifier.bab.reduce import Reduction
from verifier.bab.region_attack import region_attack
from verifier.bab.search_attacks import SearchAttacks
from verifier.bab.search_root import SearchRoot
from verifier.bab.warm_start import AlphaCarry
from verifier.memory_guard import halved_after_out_of_memory, is_out_of_memory

__all__ = ["NeuronSplitOptions", "NeuronSplitSearch", "region_attack"]

log = logging.getLogger(__name__)

class NeuronSplitSearch(SearchRoot, SearchAttacks):
    def __init__(self, graph, problem: RegionProblem, deadline: float,
                 options: NeuronSplitOptions, progress: Progress,
                 validate: Callable[[torch.Tensor], object | None],
                 attack: Callable[[int, float], torch.Tensor | None] | None = None,
                 root_bounds: dict[str, Interval] | None = None):
        """``validate(x [N, d])`` returns a checked counterexample or None; ``attack(seed,
        deadline)`` returns candidate points [M, d] (the IR sees a violation) or None.
        ``root_bounds``: sound interval bounds [1, *shape] of the region's values that an
        earlier pass found (the bound cascade's alpha-CROWN): the root keeps them instead of
        recomputing its intermediate bounds with alpha-CROWN."""
        # The graph bound_spec bounds (``bound_graph``: value names kept; the same graph when
        # no rewrite applies), so the search's passes relax the same nodes.
        graph = bound_graph(graph)
        self.graph, self.problem, self.deadline = graph, problem, deadline
        self.options, self.progress = options, progress
        self.validate, self.attack = validate, attack
        self.layers = split_layers(graph, options.nonlinear,
                                   options.nonlinear and options.products)
        self.sign_only = all(lay.sign_split and not lay.products for lay in self.layers)
        self.fc_chain = fc_relu_chain(graph, self.sign_only)
        self.points, self.carry = SplitPoints(options.points), AlphaCarry(self.layers)
        self.input_shape = graph.inputs[0].shape
        self.out_name = graph.outputs[0].name
        self.counters = _Counters()
        self.root_bounds = root_bounds
        self.reduction: Reduction | None = None  # set when the root narrows the net
        self.schedule = AttackSchedule(options.attack_every, adaptive=options.adaptive_attack)
        self.seeds: torch.Tensor | None = None  # vertices of the worst domains' bounds
        self.cut_tree_firsts: list[int] = []  # set by the root's branching scores
        # (cuts: on Relu outputs only; a LeakyRelu net learns nogoods without them)
        self.cuts = options.cuts and self.sign_only and relu_outputs(graph, self.layers)
        self.nogoods = nogood_hooks((options.nogoods or options.cuts) and self.sign_only,
                                    options.step_iterations, self.cuts)
        self.batch_cap = options.batch  # halved by each step that runs out of memory

    # ---- bounding -------------------------------------------------------------------------
    def _spec(self, n: int):
        p, shape = self.problem, self.graph.outputs[0].shape
        coef = p.coef.unsqueeze(0).expand(n, *p.coef.shape)
        return coef, coef.reshape(n, coef.shape[1], *shape), p.rhs.unsqueeze(0).expand(n, -1)

    def _intermediates(self, dom: NeuronDomains, reuse: bool | torch.Tensor,
                       alpha_iterations: int = 0) -> tuple[Intermediates, PassCache]:
        """Intermediate bounds of the domains, and the cache that passes over them share.
        ``reuse``: True keeps every given (parent) bound, False recomputes all, a tensor [N]
        of layer indices recomputes, per domain, only the layers after that index (its
        newest split)."""
        n, shape = len(dom), self.input_shape
        box = Interval(self.problem.lower.reshape(1, *shape).expand(n, *shape),
                       self.problem.upper.reshape(1, *shape).expand(n, *shape))
        given = {v: Interval(dom.lower[v], dom.upper[v]) for v in dom.lower}
        if isinstance(reuse, torch.Tensor):
            reuse = {lay.value: reuse >= j for j, lay in enumerate(self.layers)}
        cache = PassCache()
        # alpha's iterations (the root's) in the work dtype: they only pick the parameters of
        # the bounds' own pass (``bounds.engine.alpha``)
        work = torch.float32 if alpha_iterations > 0 and self.options.work_float32 \
            and self.sign_only else None
        with torch.no_grad():
            inter = compute_intermediate(self.graph, box, given, "crown", reuse_given=reuse,
                                         alpha_iterations=alpha_iterations, cache=cache,
                                         work_dtype=work)
        return inter, cache

    def _open_rows(self, refuted: torch.Tensor) -> torch.Tensor:
        p = self.problem
        rows = (~refuted).repeat_interleave(p.n_rows, dim=1)
        return rows & torch.isfinite(p.rhs).unsqueeze(0)

    def bound(self, dom: NeuronDomains, iterations: int, reuse: bool | torch.Tensor,
              intermediate_alpha: int = 0, parents: Intermediates | None = None,
              hopeless: bool = False, stuck: bool = False) -> NeuronDomains:
        """Bound the domains (updating bounds, warm starts, candidates); returns the open ones.
        ``parents``: the intermediate bounds of the domains ``dom`` was split from (kid i
        from parent i mod len(parents)): with ``reuse`` True the kids' come from them
        (``child_intermediates``) rather than from a pass over the network. ``hopeless``:
        pairs that cannot be proved in ``iterations`` stop early (``drop_hopeless``; a
        search step's children, not the root nor domains with nothing left to split).
        ``stuck``: domains with nothing left to split, whose bound is an LP's dual: the step
        sizes do not decay (an empty domain's betas must grow without limit).

        Only spec rows still open are optimised (refuted disjuncts stay refuted in every
        descendant); the others keep their old values. Relu-only searches optimise the open
        (domain, row) pairs and drop each once proved (``pair_batches``, ``pair_loop``);
        otherwise the rows open in some domain of the batch are optimised for all of them.
        """
        n, p = len(dom), self.problem
        if n == 0:
            return dom
        if parents is not None and reuse is True:
            inter, cache = child_intermediates(parents, dom), PassCache()
        else:
            inter, cache = self._intermediates(dom, reuse, intermediate_alpha)
        infeasible = inter.infeasible
        coef, _, rhs = self._spec(n)
        weight = self._open_rows(dom.refuted) & ~infeasible.unsqueeze(1)
        rows = weight.any(0).nonzero().flatten()
        lower = ibp_lower(inter.bounds[self.out_name], coef)
        optimise = self._by_pairs if self.sign_only and self.options.pair_batches \
            else self._by_rows
        beta = replace(self.options.beta, iterations=iterations,
                       drop_hopeless=hopeless and self._drops_hopeless(),
                       chain_pass=self.options.chain_pass,
                       lr_decay=1.0 if stuck else self.options.beta.lr_decay)
        lower, alphas, betas, guide = optimise(dom, (inter, cache), lower, weight, beta)
        lower = torch.maximum(final_margin(lower - rhs), dom.bound)
        lower = torch.where(infeasible.unsqueeze(1), torch.full_like(lower, math.inf), lower)
        refuted = dom.refuted | p.refuted_disjuncts(lower)
        # the queue's order: the optimisation's own bounds where no sound pass certified them,
        # floored by the margin the domains came with (a child's, its parent's): a child's
        # loop can end below its parent's (its new split's beta starts at 0), as its bound
        # can, which is floored by the parent's bound above
        rank = lower if guide is None else torch.maximum(lower, guide - rhs)
        margin = torch.maximum(p.margin(rank, refuted), dom.margin)
        out = NeuronDomains(
            dict(dom.splits),
            {lay.value: inter.bounds[lay.value].lower for lay in self.layers},
            {lay.value: inter.bounds[lay.value].upper for lay in self.layers},
            alphas, betas, lower, margin, refuted, dom.candidates, dom.depth)
        keep = ~refuted.all(1)
        self.counters.done += n
        self.nogoods.observe(self, out, keep)
        if bool(keep.any()):
            self._branch_scores((inter, cache), out, {k: v[:, rows] for k, v in alphas.items()},
                                {k: v[:, rows] for k, v in betas.items()}, rows, keep, rank)
        if bool(keep.all()):  # nothing refuted: no copy (alphas of wide nets take seconds)
            return out
        check_deadline()  # the copy below cannot check the clock
        return out.select(keep)

    def _drops_hopeless(self) -> bool:
        """``drop_hopeless`` applies: on, and some split layer is convolutional (on fully
        connected nets the better-optimised children paid more; ``neuron_options``)."""
        return self.options.drop_hopeless and has_conv_split_layer(self.layers)

    def _by_rows(self, dom: NeuronDomains, bounded, lower: torch.Tensor,
                 weight: torch.Tensor, beta: BetaOptions):
        """alpha-beta over the rows open in some domain: (raw lower bounds [N, S], alphas,
        betas [N, S, ...] merged with the old warm starts)."""
        (inter, cache), p, n = bounded, self.problem, len(dom)
        _, full_coef, rhs = self._spec(n)
        infeasible = inter.infeasible
        rows = weight.any(0).nonzero().flatten()
        sub_alphas, sub_betas = {}, {}
        if len(rows):
            def stop(best):
                full = lower.clone()
                full[:, rows] = torch.maximum(full[:, rows], best)
                full = torch.maximum(final_margin(full - rhs), dom.bound)
                return bool((dom.refuted | infeasible.unsqueeze(1)
                             | p.refuted_disjuncts(full)).all())

            warm = Warm({k: v[:, rows].to(inter.dtype) for k, v in dom.alphas.items()},
                        {k: v[:, rows].to(inter.dtype) for k, v in dom.betas.items()})
            best, sub_alphas, sub_betas = optimize_alpha_beta(
                inter, self.out_name, full_coef[:, rows], dom.splits,
                beta, warm,
                weight[:, rows], stop, self.deadline, self._intervals(inter.bounds), cache,
                self._work_dtype(inter))
            lower = lower.clone()
            lower[:, rows] = torch.maximum(lower[:, rows], best)
        lead, dev = (n, p.coef.shape[0]), p.coef.device
        return (lower, merge_rows(dom.alphas, sub_alphas, rows, lead, dev),
                merge_rows(dom.betas, sub_betas, rows, lead, dev, beta_slots(self.layers)),
                None)

    def _by_pairs(self, dom: NeuronDomains, bounded, lower: torch.Tensor,
                  weight: torch.Tensor, beta: BetaOptions):
        """alpha-beta over the open (domain, row) pairs (``pair_loop``); as :meth:`_by_rows`."""
        inter, p, n = bounded[0], self.problem, len(dom)
        _, full_coef, rhs = self._spec(n)
        d, r = weight.nonzero(as_tuple=True)
        lead, dev = (n, p.coef.shape[0]), p.coef.device
        if len(d) == 0:
            return (lower, merge_rows(dom.alphas, {}, d, lead, dev),
                    merge_rows(dom.betas, {}, d, lead, dev, beta_slots(self.layers)), None)
        known = torch.maximum(final_margin(lower - rhs), dom.bound)  # updated as pairs improve
        closed = dom.refuted | inter.infeasible.unsqueeze(1)

        def proved(idx: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
            di, ri = d[idx], r[idx]
            known[di, ri] = torch.maximum(known[di, ri], final_margin(best.to(known) - rhs[di, ri]))
            return (closed | p.refuted_disjuncts(known))[di, ri // p.n_rows]

        best, alphas, betas, loop = optimize_pairs(
            inter, self.out_name, full_coef, dom.splits, Pairs(d, r), (dom.alphas, dom.betas),
            beta, proved, self.deadline, self._work_dtype(inter), rhs[d, r],
            lazy=self.options.lazy_certify,
            cuts=self.nogoods.cuts_for(dom, inter.bounds, inter.dtype))
        lower = lower.clone()
        lower[d, r] = torch.maximum(lower[d, r], best)
        guide = None
        if self.options.lazy_certify:  # (uncertified pairs: -inf in ``best``)
            guide = torch.full_like(lower, -math.inf)
            guide[d, r] = loop.to(guide.dtype)
        return (lower, merge_pairs(dom.alphas, alphas, d, r, lead, dev),
                merge_pairs(dom.betas, betas, d, r, lead, dev, beta_slots(self.layers)), guide)

    def _work_dtype(self, inter: Intermediates) -> torch.dtype:
        """The dtype of passes that only guide the search (optimisation, branching scores):
        float32 with ``work_float32`` on Relu-only nets, and on other nets while every
        interval stays within ``work_dtype.fits`` (the smooth ops' planes overflow far sooner
        in float32: Exp of a wide interval); else the bounds' own."""
        if not self.options.work_float32:
            return inter.dtype
        if self.sign_only or all(fits(v, torch.float32) for v in inter.bounds.values()):
            return torch.float32
        return inter.dtype

    def _guide(self, inter: Intermediates) -> Intermediates:
        """``inter`` in the work dtype, for passes whose results are not bounds."""
        dt = self._work_dtype(inter)
        return inter if dt == inter.dtype else cast_intermediates(inter, dt)

    def _intervals(self, bounds: dict) -> dict:
        """Bounds of the general nonlinear split values (their split constraints' ends)."""
        return {lay.value: (bounds[lay.value].lower, bounds[lay.value].upper)
                for lay in self.layers if not lay.sign_split}

    def _branch_scores(self, bounded: tuple[Intermediates, PassCache], out: NeuronDomains,
                       alphas, betas, rows, keep, rank: torch.Tensor | None = None) -> None:
        """Candidates (top-k BaBSR) for every domain, and primal points to test (from the
        weakest row by ``rank`` [N, S], the bounds that order the queue; default the
        domains' bounds)."""
        inter, cache = bounded
        guide = self._guide(inter)  # scores and points are no bounds: the work dtype
        _, full_coef, _ = self._spec(len(out))
        terms = split_terms(out.splits, guide.dtype, self._intervals(guide.bounds))
        betas = {k: v for k, v in betas.items() if k in terms}
        extra = split_extra({k: v.to(guide.dtype) for k, v in betas.items()}, terms)[0] \
            if betas else None
        alphas = {k: v.detach().to(guide.dtype) for k, v in alphas.items()}
        chain = linear_chain(guide.graph) if self.options.chain_pass else None
        if usable(chain, guide, self.out_name, alphas, terms):
            coefs, input_coef = chain_coefs(
                chain, chain_state(chain, guide), full_coef[:, rows].to(guide.dtype), alphas,
                {k: v.to(guide.dtype) for k, v in betas.items()}, terms)
        else:
            coefs, input_coef = layer_output_coefs(
                guide, self.out_name, full_coef[:, rows].to(guide.dtype), self.layers,
                alphas, extra, cache if guide is inter else PassCache())
        coefs = {k: v.to(inter.dtype) for k, v in coefs.items()}
        alphas = {k: v.to(inter.dtype) for k, v in alphas.items()}
        input_coef = None if input_coef is None else input_coef.to(inter.dtype)
        weight = self._open_rows(out.refuted)[:, rows]
        check_deadline()  # scoring and the primal points below run whole layers at a time
        if self.sign_only:
            scores = babsr_scores(inter, self.layers, coefs, alphas, weight)
        else:
            scores = split_scores(inter, self.layers, coefs, alphas, weight,
                                  self.options.heuristic, self.points)
        k = self._fsb_candidates() if self.options.branching == "fsb" else 1
        if not self.sign_only:
            k = max(k, self.options.multi_split)
        wide = self._grows_cut_trees() and self.counters.done == len(out) == 1  # the root
        idx, valid = top_candidates(scores, max(k, CUT_TREES + 1) if wide else k)
        idx = torch.where(valid, idx, torch.full_like(idx, -1))
        if wide:  # the cut trees' first splits: the next-best neurons
            self.cut_tree_firsts = [int(i) for i in idx[0, 1:CUT_TREES + 1] if int(i) >= 0]
        out.candidates = idx[:, :k]
        check_deadline()
        rank = out.bound if rank is None else rank
        self._primal_points(input_coef, rank[:, rows], weight, keep)

    # ---- branching ------------------------------------------------------------------------
    def _fsb_candidates(self) -> int:
        """``fsb_candidates``, its None resolved by the kind of search."""
        k = self.options.fsb_candidates
        if k is not None:
            return k
        return RELU_FSB_CANDIDATES if self.sign_only else GENERAL_FSB_CANDIDATES

    def choose(self, dom: NeuronDomains, parents: Intermediates | None = None) -> torch.Tensor:
        """One global neuron index per domain (-1: nothing left to split); ``parents``: the
        domains' intermediate bounds (None: computed when needed)."""
        cand = dom.candidates[:, :self._fsb_candidates()]
        first = cand[:, 0]
        if self.options.branching != "fsb" or cand.shape[1] == 1:
            return first
        valid = cand >= 0
        k, n = cand.shape[1], len(dom)
        # k children pairs per domain in one split: candidate j's children of domain i at
        # j * n + i (upper halves) and (k + j) * n + i (lower halves); kid m of parent m mod n
        choice = torch.where(valid, cand, first.unsqueeze(1)).T.reshape(-1)
        light = not self.carry.nodes  # no warm start to carry: the kids need no copies of it
        base = replace(dom, alphas={}, betas={}) if light else dom
        kids = split_domains(base.repeat(k), self.layers, choice, self.points, self.carry)
        margins = self._cheap_margin(kids, dom, parents).reshape(2, k, n)
        return torch.where(first >= 0, pick_fsb(cand, valid, margins[0].T, margins[1].T),
                           first)

    def _cheap_margin(self, kids: NeuronDomains, dom: NeuronDomains,
                      parents: Intermediates | None = None) -> torch.Tensor:
        """Margins [M] of ``kids`` (kid m of ``dom``'s domain m mod N), bounded with their
        parents' alphas and betas (the kids' own when they carry them) and no optimisation."""
        idx = torch.arange(len(kids), device=kids.margin.device) % len(dom)
        _, full_coef, rhs = self._spec(len(kids))
        rows = self._open_rows(kids.refuted).any(0).nonzero().flatten()
        if parents is not None:  # the guide dtype first: the kids' copies are half the size
            guide = self._guide(parents)
            low = replace(kids, lower={k: v.to(guide.dtype) for k, v in kids.lower.items()},
                          upper={k: v.to(guide.dtype) for k, v in kids.upper.items()})
            inter, cache = child_intermediates(guide, low), PassCache()
        else:
            inter, cache = self._intermediates(kids, reuse=True)
            guide = self._guide(inter)  # a margin that only ranks candidates: the work dtype
            if guide is not inter:
                inter, cache = guide, PassCache()
        infeasible = inter.infeasible
        own = kids if kids.alphas else None
        alphas = {k: (v[:, rows] if own else v[:, rows][idx]).to(inter.dtype)
                  for k, v in (own or dom).alphas.items()}
        terms = split_terms(kids.splits, inter.dtype, self._intervals(inter.bounds))
        betas = {k: (own or dom).betas[k][:, rows].to(inter.dtype) for k in terms}
        if own is None:
            betas = {k: v[idx] for k, v in betas.items()}
        with torch.no_grad():
            sub = self._guide_bound(inter, full_coef[:, rows].to(inter.dtype), alphas, betas,
                                    terms, cache)
        lower = kids.bound.clone()
        lower[:, rows] = torch.maximum(final_margin(sub - rhs[:, rows]), lower[:, rows])
        lower = torch.where(infeasible.unsqueeze(1), torch.full_like(lower, math.inf), lower)
        refuted = kids.refuted | self.problem.refuted_disjuncts(lower)
        # a kid is no worse than its parent: its queued margin (with ``lazy_certify`` the
        # optimisation's, which its ``bound`` may lie below) floors the estimate
        return torch.maximum(self.problem.margin(lower, refuted), dom.margin[idx])

    def _guide_bound(self, inter: Intermediates, coef: torch.Tensor, alphas: dict,
                     betas: dict, terms: dict, cache: PassCache) -> torch.Tensor:
        """``split_bound`` for a pass that only ranks (no bound kept): on a Linear/Relu chain
        by ``chain_guide`` (with ``chain_pass``)."""
        chain = linear_chain(inter.graph) if self.options.chain_pass else None
        if usable(chain, inter, self.out_name, alphas, terms):
            return chain_bound(chain, chain_state(chain, inter), coef, alphas, betas, terms)
        return split_bound(inter, self.out_name, coef, alphas, betas, terms, cache)

    # ---- search ---------------------------------------------------------------------------
    def run(self) -> BabOutcome:
        """Search until every domain is refuted, a counterexample validates, or time is up."""
        if not self.layers:
            return BabOutcome("unknown", stats={"stopped": "no neuron to split"})
        if time.monotonic() >= self.deadline:
            return BabOutcome("timeout", stats={"stopped": "deadline before the root bound"})
        queue = DomainQueue()
        try:
            root = self._own_rates(self.root)
            # (after the root: it may narrow the net, and its layers with it)
            queue.kink_inputs = {lay.node: lay.value for lay in self.layers
                                 if lay.op in rules() and rules().get(lay.op).alpha is KINK_ALPHA}
            queue.push(root)
            return self._own_rates(self._search, queue, root)
        except DeadlineExceeded:  # a step the search's deadline cut short: its stats stay
            if time.monotonic() < self.deadline:
                raise  # an enclosing, earlier deadline: not this search's to report
            return BabOutcome("timeout", stats=self._stats(queue, "deadline during a step"))

    def _own_rates(self, fn, *args):
        """``fn(*args)`` in a deadline block with cost measurements of its own.

        The engines estimate a refinement's cost from the rates measured earlier in the same
        deadline block; the bound cascade's and the root's alpha-optimised passes measure
        tens of times what one plain CROWN pass costs, and with that estimate the children's
        intermediate bounds were left to intervals (mnistfc 256x4 prop_6_0.05: 'linear_8
        left to intervals: about 11 s needed' for 3 domains). The root and the search loop
        each start afresh; the enclosing run's deadline still holds.
        """
        with engine_deadline(self.deadline, fresh_rates=True):
            self._end_with_engines()
            return fn(*args)

    def _end_with_engines(self) -> None:
        """The search ends when the bound engines must stop, when that comes before its own
        deadline: the run's engines stop early (``strategy.engine_end``) so that a chunk in
        flight ends before the run's deadline, and the search's attacks and step estimates
        must not count on the time after it. (Its attack ran to the stage's deadline and
        0.14 s past it: the bench's max_overrun_s on oval21 cifar_deep_kw img7479.)"""
        self.deadline = min(self.deadline, time.monotonic() + time_left())

    def _search(self, queue: DomainQueue, root: NeuronDomains | None = None) -> BabOutcome:
        """The loop of :meth:`run` from the root's domain on (after the cut trees, with
        ``cuts``, from ``root``)."""
        opts, c = self.options, self.counters
        if self._grows_cut_trees() and root is not None and len(queue):
            c.extra["cut_tree_steps"], proved = grow_cut_trees(
                self, root, queue.kink_inputs, self.cut_tree_firsts)
            if proved:  # a cut tree searched the whole region
                return BabOutcome("unsat", stats=self._stats(DomainQueue(), "a cut tree closed"))
        cap = None
        while len(queue) or c.extra.get("cex") is not None:
            if c.extra.get("cex") is not None:
                return BabOutcome("sat", c.extra["cex"], self._stats(queue))
            size = self._step_size(len(queue))
            if size == 0:
                # no step that cannot finish: the engines would stop it at the deadline with
                # its work lost, and the run would end without this search's stats
                return BabOutcome("timeout", stats=self._stats(queue))
            if cap is None:
                cap = min(opts.max_domains,
                          max(2 * opts.batch, self._queue_bytes() // queue.bytes_per_domain()))
            try:
                self._step(queue, size)
            except Exception as exc:
                if not is_out_of_memory(exc) or size <= 1:
                    raise
                self.batch_cap = halved_after_out_of_memory(
                    size, exc, str(self.problem.lower.device), "neuron split")
                c.extra["out_of_memory_steps"] = c.extra.get("out_of_memory_steps", 0) + 1
                continue
            if len(queue) > cap:
                return self._give_up(queue, "domain/memory budget")
            if self.attack is not None and self._attack_due():
                self._run_attack(margin=queue.min_margin())
        if c.stuck:
            return self._give_up(queue, "unsplittable open domains")
        return BabOutcome("unsat", stats=self._stats(queue))

    def _queue_bytes(self) -> int:
        """The queue's memory budget: ``memory_bytes``, or QUEUE_MEMORY_SHARE of the memory
        free on the search's device now."""
        if self.options.memory_bytes is not None:
            return self.options.memory_bytes
        return int(QUEUE_MEMORY_SHARE * free_bytes(self.problem.lower.device))

    def _step_size(self, queued: int | None = None) -> int:
        """The next step's batch: ``batch`` when a step as slow as the slowest recent one,
        scaled to the children it would bound (``expected_kids`` of min(batch, ``queued``)
        parents), fits before the deadline; with ``shrink_last_steps`` the largest smaller
        batch that fits so, down to LAST_STEP_MIN; else 0 (no step). Never more than
        ``batch_cap`` (a step that ran out of memory halves it)."""
        batch = min(self.options.batch, self.batch_cap)
        left = self.deadline - time.monotonic()
        if left <= 0:
            return 0
        extra = self._extra_splits()

        def fits(size: int) -> bool:
            parents = size if queued is None else max(1, min(size, queued))
            kids = expected_kids(parents, extra, size)
            return self.counters.step_estimate(kids) < left

        if fits(batch):
            return batch
        if not self.options.shrink_last_steps:
            return 0
        smallest = min(LAST_STEP_MIN, batch)
        return next((size for size in range(batch - 1, smallest - 1, -1) if fits(size)), 0)

    def _step(self, queue: DomainQueue, size: int) -> None:
        """Split the worst ``size`` domains once and queue their open children."""
        c, started = self.counters, time.monotonic()
        batch = self.nogoods.prune(queue.pop_worst(size))
        if not len(batch):  # every domain popped holds a nogood
            return
        try:
            parents = self._parents(batch)
            choice = self.choose(batch, parents)
        except Exception as exc:
            if _batch_stays_open(exc):
                queue.push(batch)
            raise
        stuck = choice < 0
        bounded = int(stuck.sum())  # the step's work: the domains it bounds
        if bounded:
            self._resolve_stuck(batch.select(stuck))
            batch, choice = batch.select(~stuck), choice[~stuck]
            parents = None if parents is None else parents.select(~stuck)
        if len(batch):
            kids, reuse = self._split(batch, choice, size)
            bounded += len(kids)
            c.max_depth = max(c.max_depth, int(kids.depth.max()))
            kids, reuse = self.nogoods.propagate(kids, reuse)
            try:
                queue.push(self.bound(kids, self.options.step_iterations, reuse,
                                      parents=parents, hopeless=True))
            except Exception as exc:
                if _batch_stays_open(exc):
                    queue.push(batch)
                raise
        c.steps += 1
        c.step_timer.record(time.monotonic() - started, max(1, bounded))
        self.progress.update(c.done, len(queue), queue.min_margin())

    def _parents(self, batch: NeuronDomains) -> Intermediates | None:
        """The batch's intermediate bounds (one pass over the network), which its children
        start from, when the children reuse them (None: each child gets its own pass) and
        no nogood can prune or change children (their order then says their parent)."""
        if self._mode() != "reuse" or (self._learns_nogoods() and self.sign_only):
            return None
        return self._intermediates(batch, reuse=True)[0]

    def _learns_nogoods(self) -> bool:
        return self.options.nogoods or self.options.cuts

    def _grows_cut_trees(self) -> bool:
        return self.cuts

    def _mode(self) -> str:
        mode = self.options.intermediate
        if mode == "auto":
            return "reuse" if self.sign_only and not self.fc_chain else "downstream"
        return mode

    def _relu_multi_split(self) -> bool:
        """``relu_multi_split``, its None resolved: off on fully connected Relu chains."""
        multi = self.options.relu_multi_split
        return not self.fc_chain if multi is None else multi

    def _split(self, batch: NeuronDomains, choice: torch.Tensor, size: int):
        """Children of ``batch`` split at ``choice`` [N] (``split_more``, filling up to
        ``size``), their reuse."""
        kids, first = split_more(batch, self.layers, choice, self.points,
                                 self._extra_splits(), size, self.carry)
        mode = self._mode()
        if mode != "downstream":
            return kids, mode == "reuse"
        return kids, first.repeat(len(kids) // len(batch))

    def _extra_splits(self) -> int:
        """Further neurons a domain may split in one step (``split_more``)."""
        opts = self.options
        return opts.multi_split - 1 if not self.sign_only or self._relu_multi_split() else 0

    def _resolve_stuck(self, dom: NeuronDomains) -> None:
        """Every Relu is fixed: the bound is an LP dual; optimise it much longer."""
        rest = self.bound(dom, self.options.stuck_iterations, reuse=True, stuck=True)
        self.counters.stuck += len(rest)

    def _stats(self, queue: DomainQueue, reason: str = "") -> dict:
        c = self.counters
        stats = {"domains_bounded": c.done, "domains_queued": len(queue), "steps": c.steps,
                 "max_depth": c.max_depth, "unsplittable_open": c.stuck,
                 "worst_margin": queue.min_margin(),
                 "queue_bytes_per_domain": queue.bytes_per_domain(),
                 "dead_dropped": c.extra.get("dead_dropped", 0)}
        stats.update(self.nogoods.stats())
        for key in ("cut_tree_steps", "out_of_memory_steps"):
            if key in c.extra:
                stats[key] = c.extra[key]
        if reason:
            stats["stopped"] = reason
        self.progress.update(c.done, len(queue), queue.min_margin(), force=True)
        return stats


def _batch_stays_open(exc: BaseException) -> bool:
    """Whether a step stopped by ``exc`` puts its batch back in the queue: the deadline (the
    search's stats count the batch) or an allocation refused (bounded again in halves)."""
    return isinstance(exc, DeadlineExceeded) or is_out_of_memory(exc)
