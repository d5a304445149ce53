"""Intermediate bounds: interval bounds of every value, for the relaxations that need them.

Values are bounded in topological order, by IBP everywhere, by forward-mode linear bounds
where asked, and by CROWN (``crown.backward_bound``) for the positions where it can matter
(unstable inputs of sign-split ops such as Relu, all positions of other nonlinearities;
never for values whose IBP interval is already exact), intersected with any given
per-domain constraints. :func:`compute_intermediate` returns them as an ``Intermediates``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Collection, Mapping

import torch

from bounds.engine.alpha import optimize_alpha
from bounds.engine.analysis import (
    largest_numel,
    linear_by_sign,
    positionwise,
    positionwise_affine,
    relaxed_inputs,
    split_search,
    values_ibp_bounds_exactly,
    zero_when_dead,
)
from bounds.engine.budget import coef_budget, fan_in, forward_pays, prefix_elements
from bounds.engine.crown import MAX_COEF_ELEMENTS, NODE_TIME_GRANULE_S, backward_bound, rates
from bounds.engine.deadline import check_deadline, shared_rates, time_left
from bounds.engine.forward_linear import (
    constant_functions,
    free_coordinates,
    free_input_functions,
    propagate_functions,
)
from bounds.engine.ibp import intersect, propagate_node
from bounds.engine.linear_rows import linear_rows
from bounds.engine.patches import BOTH_SIDES, neuron_rows
from bounds.engine.results import Intermediates, PassCache
from bounds.graph import Graph, conv_like
from bounds.rules.tangents import DomainError
from bounds.types import Interval, LinearBounds, box_min

log = logging.getLogger(__name__)

# One value's CROWN refinement may use at most this share of the time left to the deadline;
# the rest is for later values and the final bound. Positions it leaves keep their (sound)
# interval bounds.
REFINE_TIME_SHARE = 0.5
# The last value a pass refines leaves only the final bound (one backward pass of the spec
# rows) to come: it may take this share, chunk by chunk, keeping what the chunks that fit
# refined (a count of certified pixels gains from every position bounded).
LAST_REFINE_SHARE = 0.8
# Where a value's CROWN rows do not fit in its share, they go back only as far as fits
# (``_affordable_window``): the values before the window are concretised at their interval
# bounds (``backward_bound``'s ``concretize_at``: always sound). A window of fewer nodes than
# this (the value's own included) is about as loose as IBP and is not run. Measured on a
# CIFAR-100-size ResNet (28 nodes, eps 0.0005, one thread): the whole pass over 13 CPU
# minutes; windows of 5 and 9 nodes proved the spec's 99 rows (+0.355, +0.358) in 42 and 63 CPU
# s, 3 nodes gave -52.9 in 63 s (looser bounds leave more unstable rows), IBP -153.
MIN_WINDOW_NODES = 5
# Until a rate is measured, passes hold this fraction of the memory budget.
UNMEASURED_SHARE = 8
# Cost of one packed pass element beyond its rows (gathering its domain's bounds and
# relaxations), in units of one coefficient row.
PACK_OVERHEAD_ROWS = 2
# Values read only through their sign are bounded one side first (``_Refiner._sign_probes``);
# NNCERT_SIGN_PROBES=0 bounds both sides of every unstable position (ablation).
SIGN_PROBES = os.environ.get("NNCERT_SIGN_PROBES", "1") != "0"


# Seconds per multiply-add of a forward-mode step before one is measured (about 0.5 GFLOP/s:
# a slow float64 core, so that an unmeasured first step is not priced too cheap).
FORWARD_DEFAULT_RATE = 2e-9
_FORWARD_KEY = ("forward-mode step",)


def forward_rate() -> float:
    """Measured seconds per multiply-add of forward-mode steps in this deadline block."""
    memo = shared_rates()
    known = None if memo is None else memo.get(_FORWARD_KEY)
    return FORWARD_DEFAULT_RATE if known is None else known


def _note_forward_rate(seconds: float, work: int) -> None:
    memo = shared_rates()
    if memo is not None and work > 0:
        rate = seconds / work
        known = memo.get(_FORWARD_KEY)
        # (the slower of this step and the memory of earlier ones, decaying: small steps
        # cost more per multiply-add than large ones)
        memo[_FORWARD_KEY] = rate if known is None else max(rate, 0.5 * known)


def _read_by_sign_only(graph: Graph, name: str) -> bool:
    """Every consumer of ``name`` outputs exactly 0 where it is <= 0 and is split by sign
    (Relu): an inactive position's lower bound matters to none of them (a LeakyRelu's
    does)."""
    return all(split_search(n.op) == "sign" and zero_when_dead(n)
               for n in graph.consumers(name))


def _unstable_only(graph: Graph, name: str) -> bool:
    """Whether CROWN tightens ``name`` only where its interval holds 0 inside."""
    return all(linear_by_sign(n.op) for n in graph.consumers(name))


def _positions_to_refine(graph: Graph, name: str, interval: Interval) -> torch.Tensor:
    """[B, numel] mask of the positions whose bounds CROWN should tighten, per domain."""
    lower, upper = interval.lower.flatten(1), interval.upper.flatten(1)
    if _unstable_only(graph, name):
        # consumers exact where the sign is fixed: the bounds there do not matter (LeakyRelu
        # and Abs too, not only Relu: a cGAN's discriminator refined all 4096 rows of a layer)
        return (lower < 0) & (upper > 0)
    return upper > lower


def _values_to_refine(graph: Graph, exact: set) -> set:
    """The values backward CROWN refines: the inputs of relaxed nodes, except that a value
    whose positions are all read by such inputs through positionwise affine maps or moves
    (its gate Slices, an LSTM step's four; a Reshape before them) is refined in their place,
    one pass over its rows instead of one per part; the parts then follow it
    (``_Refiner._follows_tight``). Not where a part is refined only at unstable positions:
    its source's stable positions would be bounded for nothing."""
    need = set(relaxed_inputs(graph)) - exact
    readers: dict[str, list] = {}
    for node in graph.nodes:
        for name in set(node.dynamic_inputs):
            readers.setdefault(name, []).append(node)
    for node in reversed(graph.nodes):  # (a part's own source is lifted before it)
        if node.name in need or node.name in exact:
            continue
        parts = [c for c in readers.get(node.name, ()) if c.name in need
                 and positionwise_affine(c) and not _unstable_only(graph, c.name)]
        covered = sum(math.prod(c.shape) for c in parts)
        if parts and covered >= math.prod(node.shape):
            need.add(node.name)
    return need


def _expected_tight(graph: Graph, need: set, exact: set) -> set:
    """The values of ``need`` expected to follow tight ones (``_Refiner._follows_tight``),
    assuming each refinement of every position runs whole."""
    tight, derived = set(exact), set()
    for node in graph.nodes:
        if positionwise(node) and node.dynamic_inputs[0] in tight:
            tight.add(node.name)
            derived |= {node.name} & need
        elif node.name in need and not _unstable_only(graph, node.name):
            tight.add(node.name)
    return derived


def _rows_per_pass(counts: torch.Tensor, k: int, most: int | None = None) -> int:
    """Rows m <= ``most`` per pass element minimising (m + overhead) x number of elements,
    where a domain with c selected positions takes ceil(c / m) elements. (Without the cap a
    lone domain with 43k unstable positions packed them all into one 43k x 43k element.)"""
    c = counts[counts > 0].to(torch.float64)
    m = torch.arange(1, min(k, most or k) + 1, dtype=torch.float64, device=c.device)
    elements = torch.ceil(c.unsqueeze(0) / m.unsqueeze(1)).sum(1)
    return int(torch.argmin((m + PACK_OVERHEAD_ROWS) * elements)) + 1


def _pack(mask: torch.Tensor, counts: torch.Tensor, k: int, m: int):
    """Pass elements for ``crown_interval``: (domain [V], positions [V, m], valid [V, m],
    elements per domain [B])."""
    device = mask.device
    # Per domain: its selected positions first (stable sort keeps index order), then padding.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]
    per_domain = torch.div(counts + m - 1, m, rounding_mode="floor")
    dom = torch.repeat_interleave(torch.arange(mask.shape[0], device=device), per_domain)
    first = torch.cumsum(per_domain, 0) - per_domain  # each domain's first element
    part = torch.arange(dom.shape[0], device=device) - first[dom]
    cols = part.unsqueeze(1) * m + torch.arange(m, device=device)  # [V, m]
    valid = cols < counts[dom].unsqueeze(1)
    idx = order[dom.unsqueeze(1), cols.clamp(max=k - 1)]
    return dom, idx, valid, per_domain


def _rate_key(graph: Graph, alpha_iterations: int = 0) -> tuple:
    """Key of the measured seconds per coefficient-row element of this graph's refinement
    passes. Alpha-optimised refinements (``alpha_iterations`` > 0) cost tens of times a plain
    CROWN pass per row and keep a rate of their own: one shared rate made the children of a
    branch-and-bound root leave their intermediate bounds to intervals ("about 11 s needed"
    for 3 domains on mnistfc 256x4) after the root's alpha passes had measured it."""
    last = graph.nodes[-1].name if graph.nodes else None  # y = x has no node
    return ("crown_row_element", graph.inputs[0].name, len(graph.nodes), last, alpha_iterations)


def chunk_rows(graph: Graph, cache: PassCache, width: int, device=None,
               dtype: torch.dtype | None = None, alpha_iterations: int = 0) -> int:
    """Coefficient rows (over all domains) one backward pass may hold when the widest value
    has ``width`` elements: the memory budget (MAX_COEF_ELEMENTS, and with ``device`` and
    ``dtype`` no more than ``budget.coef_budget`` allows on the memory free there), and at the
    rate measured on this graph, NODE_TIME_GRANULE_S per node."""
    budget = MAX_COEF_ELEMENTS
    if device is not None and dtype is not None:
        budget = coef_budget(device, dtype, budget)
    rate = rates(cache).get(_rate_key(graph, alpha_iterations))
    if rate is None or alpha_iterations > 0:
        # (an alpha refinement also keeps its autograd graph: the unmeasured share always)
        rows = max(1, budget // (UNMEASURED_SHARE * max(1, width)))
        if rate is None:
            return rows
    else:
        rows = max(1, budget // max(1, width))
    # An alpha refinement's rate covers all its bound passes (about two per iteration: the
    # pass and autograd's backward through it) while the granule is one node step of one
    # pass; and its loop reads the clock before every pass.
    per_pass = rate / max(1, 2 * alpha_iterations)
    return max(1, min(rows, int(NODE_TIME_GRANULE_S / max(per_pass * width, 1e-12))))


def backward_rows_fit(graph: Graph, cache: PassCache, rows: int, name: str) -> bool:
    """Whether ``rows`` plain CROWN rows back from value ``name`` fit in the time left, at
    the rate measured on this graph's refinement passes (unknown rate or no deadline: yes)."""
    return _fits(graph, cache, rows * prefix_elements(graph, name), name, share=1.0)


def _fits(graph: Graph, cache: PassCache, work: int, name: str,
          alpha_iterations: int = 0, share: float = REFINE_TIME_SHARE) -> bool:
    """Whether ``work`` (coefficient rows x values' elements of backward passes) fits in
    ``share`` of the time left, at the rate last measured on this graph (unknown rate: yes;
    the first chunk measures it and the engines' deadline checks bound it)."""
    rate = rates(cache).get(_rate_key(graph, alpha_iterations))
    if rate is None:
        return True
    need, left = rate * work, time_left()
    if need <= share * left:
        return True
    log.info("CROWN rows of %s do not fit whole: about %.1f s needed, %.1f s left",
             name, need, left)
    return False


def _affordable_window(graph: Graph, cache: PassCache, name: str, work_per_depth: int,
                       budget_s: float) -> tuple[frozenset, int] | None:
    """The values before the longest window of nodes ending at ``name`` whose backward rows
    (``work_per_depth`` rows x the window's elements) fit in ``budget_s`` at the rate measured
    on this graph, and the window's elements; None: no rate yet, or fewer than
    MIN_WINDOW_NODES nodes fit."""
    rate = rates(cache).get(_rate_key(graph))
    if rate is None or budget_s <= 0:
        return None
    most = budget_s / (rate * max(1, work_per_depth))
    k = next(i for i, node in enumerate(graph.nodes) if node.name == name)
    total, cut = 0, k + 1
    while cut > 0 and total + math.prod(graph.nodes[cut - 1].shape) <= most:
        cut -= 1
        total += math.prod(graph.nodes[cut].shape)
    if k + 1 - cut < MIN_WINDOW_NODES:
        return None
    log.info("CROWN bounds of %s: rows back %d of %d nodes", name, k + 1 - cut, k + 1)
    return frozenset(node.name for node in graph.nodes[:cut]), max(1, total)


def _bound_rows(sub: Intermediates, cache: PassCache, name: str, idx: torch.Tensor, m: int,
                alpha_iterations: int, record: bool, work_dtype: torch.dtype | None = None,
                signs: tuple[float, ...] = BOTH_SIDES, concretize_at: Collection[str] = ()):
    """Lower bounds of s * value for each s in ``signs`` at positions ``idx`` [V, m] of each
    pass element (``[V, len(signs) m]``, one block per sign) and, with ``record``, the input
    coefficients of those rows (or None).
    ``work_dtype``: alpha's iterations run in it (``alpha.optimize_alpha``).
    ``concretize_at``: the values where the rows stop (``_affordable_window``; plain CROWN)."""
    shape = sub.graph.shape_of(name)
    spatial = conv_like(sub.graph, name)
    through = None if spatial or alpha_iterations > 0 else linear_rows(sub, name, idx, signs)
    if through is not None:  # the rows taken through their Linear node (linear_rows.py)
        source, coef, constant = through
        res = backward_bound(sub, source, coef, keep_input=record, cache=cache,
                             concretize_at=concretize_at)
        return res.lower + constant, res.input_coef
    if spatial:  # one-cell windows, no dense one-hot rows over the whole value
        coef = neuron_rows(shape, spatial, idx, sub.dtype, signs)
    else:
        v = idx.shape[0]
        onehot = torch.zeros((v, m, math.prod(shape)), device=sub.device, dtype=sub.dtype)
        onehot.scatter_(2, idx.unsqueeze(-1), 1.0)
        coef = torch.cat([s * onehot for s in signs], dim=1).reshape(
            v, len(signs) * m, *shape)
    if alpha_iterations > 0:
        with torch.enable_grad():
            res, _ = optimize_alpha(sub, name, coef, alpha_iterations, cache=cache,
                                    work_dtype=work_dtype)
        return res, None
    res = backward_bound(sub, name, coef, keep_input=record, cache=cache,
                         concretize_at=concretize_at)
    return res.lower, res.input_coef


class _Packing:
    """Pass elements of one ``crown_interval`` call: element e bounds domain ``dom[e]`` at
    positions ``idx[e]`` (where ``valid[e]``)."""

    def __init__(self, mask: torch.Tensor, counts: torch.Tensor, k: int, m: int):
        self.m = m
        self.dom, self.idx, self.valid, per_domain = _pack(mask, counts, k, m)
        self.one_each = self.dom.shape[0] == mask.shape[0] and bool((per_domain == 1).all())

    def __len__(self) -> int:
        return self.dom.shape[0]

    def part(self, sl: slice):
        return self.dom[sl], self.idx[sl], self.valid[sl]


def crown_interval(inter: Intermediates, name: str, mask: torch.Tensor,
                   alpha_iterations: int = 0, cache: PassCache | None = None,
                   record: bool = False, work_dtype: torch.dtype | None = None,
                   signs: tuple[float, ...] = BOTH_SIDES, last: bool = False,
                   spread: int = 1) -> tuple[Interval | None, LinearBounds | None]:
    """CROWN bounds of value ``name`` at the positions ``mask`` [B, numel] selects (others:
    +-inf), from the bounds of the values before it in ``inter``; with ``record`` (and no
    alpha, both sides) also the linear bounds in the input found for those positions (else
    None). ``signs``: (1.0,) bounds only from below, (-1.0,) only from above (the other side
    stays infinite), the default both.

    Each domain bounds only its own selected positions. They are packed m to a pass element
    (a domain with c positions takes ceil(c / m) elements, each a copy of the domain's
    bounds), with m chosen per call: counts vary a lot between domains (ACAS Xu deep in
    input splitting: 7 on average, 22 at most), and padding every domain to the busiest one
    computed three times the rows needed. Elements go through the backward pass in chunks
    that hold at most MAX_COEF_ELEMENTS coefficients; the refinement is not started, or
    stops after a chunk, when what is left would take more than REFINE_TIME_SHARE of the time
    to the engines' deadline (those positions stay +-inf: the caller keeps their intervals).
    ``work_dtype``: alpha's iterations run in it (the bounds returned are ``inter``'s dtype).
    ``last``: the pass refines nothing after this value: each chunk needs only to fit in
    LAST_REFINE_SHARE of the time left, and the chunks that fit keep their bounds.
    Plain CROWN rows that do not fit go back only as far as fits in the share divided by
    ``spread`` (the values still to refine, this one included: ``_affordable_window``); no
    linear bounds are recorded from such rows.
    """
    cache = PassCache() if cache is None else cache
    graph, b = inter.graph, inter.batch
    counts = mask.sum(1)
    k = int(counts.max()) if b else 0
    if k == 0:
        return None, None
    rows = chunk_rows(graph, cache, largest_numel(graph), inter.device, inter.dtype,
                      alpha_iterations)
    sides = len(signs)
    key = _rate_key(graph, alpha_iterations)
    if rates(cache).get(key) is None and not record:
        probe = _first_positions(mask, max(1, rows // sides))
        if bool((mask & ~probe).any()):
            options = {"alpha_iterations": alpha_iterations, "cache": cache,
                       "work_dtype": work_dtype, "signs": signs, "last": last,
                       "spread": spread}
            warm_up = key if cold_first_chunk(inter.device, key) else None
            return _probed(inter, name, (probe, mask & ~probe), options, warm_up), None
    pack = _Packing(mask, counts, k, _rows_per_pass(counts, k, max(1, rows // sides)))
    m, depth = pack.m, prefix_elements(graph, name)
    step, rec = max(1, rows // (sides * m)), None
    share = LAST_REFINE_SHARE if last else REFINE_TIME_SHARE

    def rows(start: int) -> int:  # the rest's rows (``last``: the next chunk's)
        elements = len(pack) - start
        return sides * m * (min(step, elements) if last else elements)

    def fits(start: int) -> bool:  # the rest in its share
        return _fits(graph, cache, rows(start) * depth, name, alpha_iterations, share)

    window: frozenset = frozenset()
    # The whole rows in the share over sqrt(values left): with the greedy share alone the early
    # values took the time and the later ones' windows ran into the deadline (no bound); over
    # the count itself the early values lost their whole rows. One CROWN step, one thread
    # (worst row, 20 / 40 s): CIFAR-100-size ResNet 4 blocks -15.3 / -3.36 against -13.2 /
    # -4.90 before windows; 8 blocks -3.8e4 / -2.7e3 against -8.2e4 / -2.7e4. (Alpha
    # refinements have no window: the greedy share, as before.)
    windows = alpha_iterations == 0
    if not _fits(graph, cache, rows(0) * depth, name, alpha_iterations,
                 share / math.sqrt(max(1, spread)) if windows else share):
        cut = None if not windows else _affordable_window(
            graph, cache, name, rows(0), share * time_left() / max(1, spread))
        if cut is None:
            log.info("CROWN bounds of %s left to intervals", name)
            return None, None
        window, depth = cut
        # (its later chunks in the same share: the rate of a first windowed chunk can be
        # several times the whole rows' rate, measured on conv nets)
        record, share = False, share / max(1, spread)
    numel = math.prod(graph.shape_of(name))
    lower = torch.full((b, numel), -math.inf, device=inter.device, dtype=inter.dtype)
    upper = torch.full((b, numel), math.inf, device=inter.device, dtype=inter.dtype)
    record = record and alpha_iterations == 0 and signs == BOTH_SIDES
    for start in range(0, len(pack), step):
        if start and not fits(start):
            break
        began = time.monotonic()
        d, i, ok = pack.part(slice(start, start + step))
        # (one element per domain, in order: the whole batch, with its cached relaxations)
        whole = (pack.one_each and step >= b) or (
            d.shape[0] == b and bool((d == torch.arange(b, device=d.device)).all()))
        sub = inter if whole else inter.select(d)
        res, a = _bound_rows(sub, cache if whole else cache.for_subset(), name, i, m,
                             alpha_iterations, record, work_dtype, signs, window)
        at = d.unsqueeze(1).expand(-1, m)[ok]
        for j, s in enumerate(signs):
            block = res[:, j * m:(j + 1) * m][ok]
            if s > 0:
                lower[at, i[ok]] = block
            else:
                upper[at, i[ok]] = -block
        if record and a is not None:
            rec = _record_linear(rec, inter, sub.box, numel, (d, i, ok), a, res)
        rates(cache)[_rate_key(graph, alpha_iterations)] = (time.monotonic() - began) / (
            sides * m * d.shape[0] * depth)
    shape = graph.shape_of(name)
    return Interval(lower.reshape(b, *shape), upper.reshape(b, *shape)), rec


def _first_positions(mask: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` selected positions of ``mask`` [B, numel] (domain by domain)."""
    flat = mask.flatten()
    return (flat & (torch.cumsum(flat, 0) <= n)).reshape(mask.shape)


def _probed(inter: Intermediates, name: str, masks: tuple, options: dict,
            warm_up: tuple | None = None) -> Interval | None:
    """``crown_interval`` of a small probe mask, then of the rest: the probe measures the
    rate that sizes the rest's rows per pass element and chunks (unmeasured, a call packs
    them at the cautious first-chunk size throughout: TinyYOLO's first refinement, 11k
    positions in 48-row elements, ran at a third of the speed of 768-row ones).
    ``warm_up``: the rate key of a refinement whose first chunk pays one-time costs
    (``cold_first_chunk``): the probe's rate is dropped, so the rest probes again on a warm
    device and sizes its chunks (and decides what fits) from that second measurement."""
    first, _ = crown_interval(inter, name, masks[0], **options)
    if warm_up is not None:
        _WARMED.add((str(inter.device), warm_up))
        rates(options["cache"]).pop(warm_up, None)
    rest, _ = crown_interval(inter, name, masks[1], **options)
    if first is None or rest is None:
        return first if rest is None else rest
    return Interval(torch.maximum(first.lower, rest.lower),
                    torch.minimum(first.upper, rest.upper))


# (device, rate key) of the refinements whose first chunk this process already ran
_WARMED: set = set()


def pays_warm_up(device: torch.device) -> bool:
    """Whether a refinement's first chunk on ``device`` pays one-time costs: on a GPU (lazy
    kernel loading, the allocator's first blocks, library handles)."""
    return device.type == "cuda"


def cold_first_chunk(device: torch.device, key: tuple) -> bool:
    """Whether the first chunk of the refinement ``key`` on ``device`` is this process's
    first, with costs its rate must not count (``pays_warm_up``; once per process and
    refinement: the search's later steps trust their first chunk). On an H200, TinyYOLO's
    first CROWN refinements were estimated at 47-66 s from such a chunk and left to intervals
    (first bound -3.9e4) where the CPU refined them (-4.5e3), and the same pass, refining,
    took 4.7 s on the GPU against 13.4 s on one CPU core."""
    return pays_warm_up(device) and (str(device), key) not in _WARMED


def _record_linear(rec: LinearBounds | None, inter: Intermediates, box: Interval, numel: int,
                   rows: tuple, a: torch.Tensor, res: torch.Tensor) -> LinearBounds:
    """``rec`` (a new record when None) with the input coefficients ``a`` of the rows just
    bounded over ``box``: pass element e is domain ``dom[e]``, its rows are positions
    ``idx[e]`` where ``valid[e]`` (lower rows, then negated upper rows, in ``res``)."""
    dom, idx, valid = rows
    v, m = idx.shape
    d = inter.box.lower[0].numel()
    a = a.reshape(v, 2 * m, d)
    # constant of each row's lower bound
    c = res - box_min(a, box.lower.reshape(v, d), box.upper.reshape(v, d))
    if rec is None:
        b = inter.batch
        zeros = torch.zeros((b, numel, d), device=inter.device, dtype=inter.dtype)
        inf = torch.full((b, numel), math.inf, device=inter.device, dtype=inter.dtype)
        rec = LinearBounds(zeros, -inf, zeros.clone(), inf.clone())
    at = dom.unsqueeze(1).expand(-1, m)[valid]
    pos = idx[valid]
    rec.a_lo[at, pos] = a[:, :m][valid]
    rec.c_lo[at, pos] = c[:, :m][valid]
    # upper bound: value <= -(lower bound of -value) = -a x - c
    rec.a_hi[at, pos] = -a[:, m:][valid]
    rec.c_hi[at, pos] = -c[:, m:][valid]
    return rec


ReuseGiven = bool | Collection[str] | Mapping[str, torch.Tensor]


def _reused_rows(reuse_given: ReuseGiven, given: dict, name: str) -> torch.Tensor | bool:
    """Which domains keep ``given[name]`` as is: True (all), False (none) or a [B] mask."""
    if name not in given or reuse_given is False:
        return False
    if reuse_given is True:
        return True
    if isinstance(reuse_given, Mapping):
        rows = reuse_given.get(name)
        return False if rows is None else rows
    return name in reuse_given


def compute_intermediate(graph: Graph, box: Interval, given: dict[str, Interval] | None = None,
                         method: str = "crown", *, reuse_given: ReuseGiven = False,
                         alpha_iterations: int = 0, record_linear: bool = False,
                         cache: PassCache | None = None,
                         work_dtype: torch.dtype | None = None,
                         last_share: bool = False) -> Intermediates:
    """Interval bounds of every value over the boxes ``box`` [B, *input_shape], and per domain
    whether some value's interval is empty (the given constraints contradict each other).

    ``method``: "ibp" (intervals only), "forward" (IBP intersected with forward-mode linear
    bounds, cheap for low-dimensional inputs) or "crown" (IBP, then backward CROWN for the
    values that relaxations need; alpha-optimised when ``alpha_iterations`` > 0).
    ``given`` bounds are intersected in. ``reuse_given`` says where a value's given bounds are
    kept without a CROWN refinement (branch-and-bound children reuse their parent's
    intermediate bounds): True for every given value, a collection of value names, or a
    mapping name -> [B] bool (per domain; True = reuse). Reuse only skips work: the result
    is never looser than the given bounds, and never looser than IBP.
    Domains found infeasible are not refined further (any bound is sound on an empty set).
    With ``record_linear`` the result carries CROWN's linear bounds in the input of the
    refined values (``linear_bounds``; meant for low-dimensional inputs: [B, numel, d] each).
    ``cache``: work to reuse and to keep for later passes over the result. ``work_dtype``:
    the dtype of alpha's iterations (``alpha.optimize_alpha``; None: the bounds' own).
    ``last_share``: the last value refined may take LAST_REFINE_SHARE of the time left
    (``crown_interval``'s ``last``), for a pass that only its final bound follows.
    """
    cache = PassCache() if cache is None else cache
    given = given or {}
    info = graph.inputs[0]
    bounds = {info.name: Interval(box.lower.reshape(-1, *info.shape),
                                  box.upper.reshape(-1, *info.shape))}
    infeasible = torch.zeros(box.lower.shape[0], dtype=torch.bool, device=box.lower.device)
    inter = Intermediates(graph, box, bounds, {}, infeasible, {} if record_linear else None)
    refine = _Refiner(inter, given, method, reuse_given, alpha_iterations, cache, last_share)
    refine.work_dtype = work_dtype  # (alpha's iterations: crown_interval)
    for node in graph.nodes:
        check_deadline()
        out = refine.node(node)
        empty = out.lower > out.upper
        infeasible |= empty.reshape(empty.shape[0], -1).any(1)
    return inter


class _Refiner:
    """The per-node work of :func:`compute_intermediate`, filling the ``Intermediates`` it is
    building (its dicts, and its ``infeasible`` in place) in topological order.

    Cost-aware choice per value (``budget``): with ``method="crown"``, forward-mode linear
    bounds over the free input coordinates go along when they cost a small share of backward
    CROWN (few free inputs: MetaRoom's ~150 moving pixels, ACAS Xu's 5 inputs); each value
    then takes IBP intersected with them, and backward CROWN refines only the positions still
    unstable, when its rows fit the time left (``crown_interval``); where neither pays, the
    value keeps its IBP interval."""

    def __init__(self, inter: Intermediates, given: dict, method: str,
                 reuse_given: ReuseGiven, alpha_iterations: int, cache: PassCache,
                 last_share: bool = False):
        graph = inter.graph
        self.inter, self.given, self.method = inter, given, method
        self.reuse_given, self.alpha_iterations, self.cache = reuse_given, alpha_iterations, cache
        # Values with no relaxed node upstream are affine in the input: IBP is already exact.
        exact = values_ibp_bounds_exactly(graph)
        self.need = _values_to_refine(graph, exact) if method == "crown" else set()
        # Values whose bounds are at least as tight as their own CROWN rows would make them,
        # in every domain, in this pass: exact ones, those refined at every position, and
        # positionwise functions of these (``_follows_tight``: not refined at all).
        self.tight = set(exact)
        # how many values are still to refine from each one on (``crown_interval``'s spread;
        # those expected to follow tight ones are not counted)
        derived = _expected_tight(graph, self.need, exact)
        to_refine = [n.name for n in graph.nodes if n.name in self.need - derived]
        self.spread = {name: len(to_refine) - i for i, name in enumerate(to_refine)}
        # the last value refined, where it may take LAST_REFINE_SHARE (``last_share``)
        self.last = next((n.name for n in reversed(graph.nodes)
                          if n.name in self.need - derived), None) if last_share else None
        self.funcs, self.zbox = {}, None
        free = free_coordinates(inter.box)
        use_forward = method == "forward" or forward_pays(
            graph, [v for v in relaxed_inputs(graph) if v in self.need], free.shape[0],
            inter.batch, inter.device, inter.dtype)
        if use_forward:
            info = graph.inputs[0]
            self.funcs[info.name], self.zbox = free_input_functions(inter.box, info.shape, free)
        self.forward = use_forward
        self.work_dtype: torch.dtype | None = None  # alpha's iterations (compute_intermediate)

    def node(self, node) -> Interval:
        """Bound one value (IBP, forward, CROWN as configured); returns its interval."""
        inter, given = self.inter, self.given
        out, delta = propagate_node(inter.graph, node, inter.bounds, inter.device, inter.dtype)
        if delta is not None:  # an unbounded value's allowance: huge, never 0 * inf = NaN
            delta = torch.nan_to_num(delta, posinf=torch.finfo(delta.dtype).max)
        inter.deltas[node.name] = delta
        if self.forward and not self._forward_fits(node):
            self.forward = False  # (the rest of the pass: IBP and CROWN, as without it)
        if self.forward:
            began = time.monotonic()
            out = self._forward(node, out, delta)
            _note_forward_rate(time.monotonic() - began, self._forward_work(node))
        out = intersect(out, given.get(node.name))
        inter.bounds[node.name] = out
        reuse = _reused_rows(self.reuse_given, given, node.name)
        if self._follows_tight(node):
            # (its IBP interval, from its input's, is as tight as its CROWN rows can be)
            self.tight.add(node.name)
        elif node.name in self.need and reuse is not True:
            out, whole = self._crown(node.name, out, reuse)
            if whole:
                self.tight.add(node.name)
        return out

    def _follows_tight(self, node) -> bool:
        """A positionwise function of a value bounded at least as tightly as its CROWN rows
        would bound it (``analysis.positionwise``): e.g. a HardSigmoid's scale, shift and
        Clip after a refined convolution (a MobileNet-style probe: 17 of 37 s of CROWN)."""
        return (self.method == "crown" and positionwise(node)
                and node.dynamic_inputs[0] in self.tight)

    def _forward_work(self, node) -> int:
        """Multiply-adds of ``node``'s forward-mode step: its linear functions' elements
        (domains x free inputs x positions, lower and upper) times its fan-in."""
        d = self.zbox.lower.shape[1]
        numel = math.prod(self.inter.graph.shape_of(node.name))
        return 2 * self.inter.batch * d * numel * fan_in(node)

    def _forward_fits(self, node) -> bool:
        """Whether ``node``'s forward-mode step, priced at the measured rate, takes at most
        REFINE_TIME_SHARE of the time left: one step over many domains and free inputs can
        take longer than a whole search step has (the engines read the clock between nodes
        only). Where it does not fit, forward mode ends for this pass."""
        left = time_left()
        if left == math.inf:
            return True
        need = forward_rate() * self._forward_work(node)
        if need <= REFINE_TIME_SHARE * left:
            return True
        log.info("forward-mode bounds stop at %s: about %.2f s needed, %.2f s left",
                 node.name, need, left)
        return False

    def _forward(self, node, out: Interval, delta) -> Interval:
        inter = self.inter
        try:
            f = propagate_functions(node, self.funcs, inter.bounds, inter.device, inter.dtype)
        except DomainError:  # no finite relaxation plane there: the interval stays
            f = None
        if f is not None:
            f = f.widen(delta)
            out = intersect(out, f.concretize(self.zbox))
        out = intersect(out, self.given.get(node.name))
        d = self.zbox.lower.shape[1]
        self.funcs[node.name] = f if f is not None else constant_functions(out, d)
        return out

    def _crown(self, name: str, out: Interval, reuse) -> tuple[Interval, bool]:
        """``name``'s interval refined by CROWN, and whether every position of every domain
        got its CROWN bounds (not only the unstable ones, no reused or skipped domain)."""
        inter = self.inter
        every = out.upper.flatten(1) > out.lower.flatten(1)
        mask = (_positions_to_refine(inter.graph, name, out)
                & ~inter.infeasible.unsqueeze(1))
        if reuse is not False:
            mask = mask & ~reuse.to(mask.device).unsqueeze(1)
        if self._probes_signs(name):
            out = self._sign_probes(name, out, mask)
            inter.bounds[name] = out
            return out, False
        refined, rec = crown_interval(inter, name, mask, self.alpha_iterations, self.cache,
                                      record=inter.linear_bounds is not None,
                                      work_dtype=self.work_dtype, last=name == self.last,
                                      spread=self.spread.get(name, 1))
        if rec is not None:
            inter.linear_bounds[name] = rec
        if refined is None:
            return out, False
        whole = bool((mask | ~every | inter.infeasible.unsqueeze(1)).all()) and bool(
            (torch.isfinite(refined.lower.flatten(1)) | ~mask).all())
        out = intersect(out, refined)
        inter.bounds[name] = out
        return out, whole

    def _probes_signs(self, name: str) -> bool:
        """Whether ``name``'s positions are bounded one side first (``_sign_probes``): only
        the signs of its values matter (every consumer is split by sign), and no alpha or
        linear-bounds record wants both sides of every position."""
        return (SIGN_PROBES and self.alpha_iterations == 0 and self.inter.linear_bounds is None
                and _read_by_sign_only(self.inter.graph, name))

    def _sign_probes(self, name: str, out: Interval, mask: torch.Tensor) -> Interval:
        """CROWN bounds of the unstable positions ``mask`` of a value whose consumers only
        care about its sign, the upper bound alone first where the interval's midpoint is
        < 0 (likely inactive); the lower bound there only if the upper one is still > 0.
        Elsewhere both sides: an active position's magnitude sets the rounding allowances
        of the nodes after it, so its upper bound stays CROWN's. An inactive position's
        consumers output exactly 0 whatever its lower bound is."""
        def refine(interval: Interval, where: torch.Tensor, signs: tuple) -> Interval:
            if not bool(where.any()):
                return interval
            refined, _ = crown_interval(self.inter, name, where, 0, self.cache,
                                        work_dtype=self.work_dtype, signs=signs,
                                        spread=self.spread.get(name, 1))
            return interval if refined is None else intersect(interval, refined)

        lower, upper = out.lower.flatten(1), out.upper.flatten(1)
        inactive = (lower + upper) < 0
        out = refine(out, mask & ~inactive, BOTH_SIDES)
        out = refine(out, mask & inactive, (-1.0,))
        return refine(out, mask & inactive & (out.upper.flatten(1) > 0), (1.0,))
