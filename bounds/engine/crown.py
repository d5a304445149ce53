"""CROWN: backward linear bound propagation through the graph.

For a start value z and coefficients A (``[B, S, *shape(z)]``) we compute a lower bound of A.z
over the input box by walking the graph backwards: affine nodes pass A through exactly (their
own ``backward`` or the vector-Jacobian product of ``forward``), elementwise nonlinear nodes
replace themselves by their linear relaxation (upper plane where A < 0, lower plane where
A >= 0), nonlinear nodes with a ``backward`` rule (window max, products of two perturbed values)
relax themselves from their inputs' bounds (with ``alpha=`` under alpha-CROWN), and a node with
no backward rule, or whose planes would overflow, is concretised with its interval bounds
(always sound, just looser). Float32 rounding enters as a bounded perturbation at each node
(see rounding.py).

Intermediate bounds: values that feed a relaxed node need interval bounds; they are computed
in topological order, by CROWN for the positions where it can matter (unstable Relu inputs,
all positions of other nonlinearities; never for values whose IBP interval is already exact)
and by IBP otherwise, and intersected with any given per-domain constraints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import torch

from bounds.engine.analysis import (
    largest_numel,
    relaxed_inputs,
    values_ibp_bounds_exactly,
)
from bounds.engine.constants import as_tensor, node_args
from bounds.engine.deadline import check_deadline, shared_rates, time_left, timed_chunks
from bounds.engine.forward_linear import (
    constant_functions,
    identity_functions,
    propagate_functions,
)
from bounds.engine.ibp import intersect, propagate_node
from bounds.graph import Graph, Node
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from bounds.rules.tangents import DomainError
from bounds.types import Interval, Relaxation

log = logging.getLogger(__name__)

# Largest number of coefficient elements one backward pass may hold (memory budget).
MAX_COEF_ELEMENTS = 1 << 24
# One value's CROWN refinement may use at most this share of the time left to the deadline;
# the rest is for later values and the final bound. Positions it leaves keep their (sound)
# interval bounds.
REFINE_TIME_SHARE = 0.5
# One backward step through one node should take at most about this long, so that the
# deadline checks between nodes come often enough (a Conv VJP on 2^24 coefficients took ~1 s);
# until a rate is measured, passes hold an eighth of the memory budget.
NODE_TIME_GRANULE_S = 0.2
UNMEASURED_SHARE = 8
# Rows of an affine node's first VJP chunk, before its rate is measured: this many elements
# of the wider of its input and output.
VJP_PROBE_ELEMENTS = 1 << 21


def box_min(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """min over the boxes of a . x: a [N, S, d], lower/upper [N, d] -> [N, S]."""
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
    return torch.minimum(a * lo, a * hi).sum(-1)


@dataclass
class LinearBounds:
    """a_lo . x + c_lo <= value <= a_hi . x + c_hi for every x in the box the bounds were
    computed on (hence on every sub-box). ``a_*`` [B, numel, d], ``c_*`` [B, numel]; positions
    without a linear bound have a = 0 and c = -inf / +inf."""

    a_lo: torch.Tensor
    c_lo: torch.Tensor
    a_hi: torch.Tensor
    c_hi: torch.Tensor

    def concretize(self, lower: torch.Tensor, upper: torch.Tensor, shape) -> Interval:
        """Interval of the value over the boxes [B, d] (B matching the bounds' batch)."""
        vlo = self.c_lo + box_min(self.a_lo, lower, upper)
        vhi = self.c_hi - box_min(-self.a_hi, lower, upper)
        return Interval(vlo.reshape(-1, *shape), vhi.reshape(-1, *shape))

    def select(self, idx) -> LinearBounds:
        return LinearBounds(self.a_lo[idx], self.c_lo[idx], self.a_hi[idx], self.c_hi[idx])


@dataclass
class BoundState:
    """Everything one bound computation accumulates for a batch of B domains."""

    graph: Graph
    box: Interval  # input box, [B, *input_shape]
    bounds: dict[str, Interval] = field(default_factory=dict)
    deltas: dict[str, torch.Tensor | None] = field(default_factory=dict)
    alphas: dict[str, torch.Tensor] = field(default_factory=dict)  # for the final backward only
    relax_cache: dict[str, object] = field(default_factory=dict)
    zero_output: dict[str, torch.Tensor] = field(default_factory=dict)
    input_coef: torch.Tensor | None = None
    kept_coef: dict[str, torch.Tensor] = field(default_factory=dict)  # backward_bound keep_coef
    infeasible: torch.Tensor | None = None  # [B] bool: some value's interval came out empty
    # When not None, crown_interval records here, per refined value, the linear bounds in the
    # input that CROWN found (see LinearBounds): input splitting concretises them over sub-boxes.
    linear_bounds: dict[str, LinearBounds] | None = None
    # Measured seconds per unit of work (see _fits) when no deadline block shares them.
    rates: dict[object, float] = field(default_factory=dict)

    @property
    def device(self):
        return self.box.lower.device

    @property
    def dtype(self):
        return self.box.lower.dtype

    @property
    def batch(self) -> int:
        return self.box.lower.shape[0]


def _unsqueeze_spec(t: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    return t if t.dim() == coef.dim() else t.unsqueeze(1)


def _sum_spec(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(-1)


def _dot(coef: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum over positions of coef [B, S, *shape] * values ([B, *shape] or [B, S, *shape])."""
    if values.dim() == coef.dim():
        return _sum_spec(coef * values)
    b, s = coef.shape[:2]
    if values.shape[0] != b:
        values = values.expand(b, *values.shape[1:])
    return torch.bmm(coef.reshape(b, s, -1), values.reshape(b, -1, 1)).squeeze(-1)


def _relaxation(state: BoundState, node: Node, rule, use_alpha: bool):
    """The node's planes, or None where they would overflow (DomainError: concretise)."""
    x = state.bounds[node.dynamic_inputs[0]]
    try:
        if use_alpha and node.name in state.alphas:
            alpha = state.alphas[node.name]
            return _alpha_relaxation(node, rule, x.lower.unsqueeze(1), x.upper.unsqueeze(1), alpha)
        if node.name in state.relax_cache:
            return state.relax_cache[node.name]
        hit = rule.relax(node, x.lower, x.upper)
    except DomainError:
        hit = None
    state.relax_cache[node.name] = hit
    return hit


def _alpha_relaxation(node: Node, rule, lower, upper, alpha: torch.Tensor) -> Relaxation:
    """``rule.relax`` with per-row ``alpha`` [B, S, *shape], in chunks of spec rows sized by
    the measured cost (curves with many spec rows, e.g. thousands of disjuncts, take seconds
    per node), with the clock checked between chunks."""
    def relax_rows(start: int, stop: int) -> list[torch.Tensor]:
        a = alpha[:, start:stop]
        rel = rule.relax(node, lower, upper, a)
        return [t.expand(a.shape) for t in (rel.lower_slope, rel.lower_offset,
                                            rel.upper_slope, rel.upper_offset)]

    parts = timed_chunks(alpha.shape[1], alpha[:, :1].numel(), relax_rows)
    if len(parts) == 1:
        return Relaxation(*parts[0])
    return Relaxation(*(torch.cat([p[i] for p in parts], dim=1) for i in range(4)))


def _vjp_chunk(state: BoundState, node: Node, rule, rows: torch.Tensor) -> list:
    """Input coefficients ``[R, *in_shape]`` (None: unused input) of an affine node for
    output coefficients ``rows`` ``[R, *node.shape]``: the vector-Jacobian product."""
    primals, full = [], []
    for pos, name in enumerate(node.inputs):
        if name is None:
            full.append(as_tensor(node.consts[pos], state.device, state.dtype))
        else:
            p = torch.zeros((rows.shape[0], *state.graph.shape_of(name)), device=state.device,
                            dtype=state.dtype, requires_grad=True)
            primals.append(p)
            full.append(p)
    with torch.enable_grad():
        out = rule.forward(node, full)
        return list(torch.autograd.grad(out, primals, rows, create_graph=rows.requires_grad,
                                        allow_unused=True))


def _vjp_rows(state: BoundState, node: Node, rule, flat: torch.Tensor) -> list:
    """``_vjp_chunk`` over all rows of ``flat``, in chunks of about NODE_TIME_GRANULE_S each
    at the rate measured on this node, with a deadline check between chunks (one wide Conv,
    ConvTranspose or Resize step on thousands of rows took seconds)."""
    n, rates = flat.shape[0], _rates(state)
    key = ("vjp_row", node.name, node.op)
    width = max([math.prod(node.shape)]
                + [math.prod(state.graph.shape_of(x)) for x in node.dynamic_inputs])
    parts, first = [], 0
    while first < n:
        rate = rates.get(key)
        size = max(1, VJP_PROBE_ELEMENTS // width if rate is None
                   else int(NODE_TIME_GRANULE_S / max(rate, 1e-12)))
        if first:
            check_deadline()
        began = time.monotonic()
        parts.append(_vjp_chunk(state, node, rule, flat[first:first + size]))
        rates[key] = (time.monotonic() - began) / min(size, n - first)
        first += size
    if len(parts) == 1:
        return parts[0]
    return [None if g[0] is None else torch.cat(g) for g in zip(*parts, strict=True)]


def _vjp(state: BoundState, node: Node, rule, coef: torch.Tensor):
    """Backward step of an affine node from its forward: A -> A J, offset A . f(0)."""
    b, s = coef.shape[:2]
    graph = state.graph
    grads = _vjp_rows(state, node, rule, coef.reshape(b * s, *node.shape))
    result = []
    for name, g in zip(node.dynamic_inputs, grads, strict=True):
        shape = graph.shape_of(name)
        result.append(None if g is None else g.reshape(b, s, *shape))
    zero = state.zero_output.get(node.name)
    if zero is None:
        with torch.no_grad():
            args = [as_tensor(node.consts[i], state.device, state.dtype) if name is None
                    else torch.zeros((1, *graph.shape_of(name)), device=state.device,
                                     dtype=state.dtype)
                    for i, name in enumerate(node.inputs)]
            zero = rule.forward(node, args)[0].detach()
        state.zero_output[node.name] = zero
    offset = None if not torch.any(zero != 0) else _sum_spec(coef * zero)
    return result, offset


def _backward_node(state: BoundState, node: Node, coef: torch.Tensor, use_alpha: bool):
    """Returns (list of coef per dynamic input, offset [B,S] or None)."""
    rule = rules().get(node.op, node.name)
    if rule.relax is not None and rule.traits.elementwise:
        rel = _relaxation(state, node, rule, use_alpha)
        if rel is None:
            return None, None
        # A -> A+ lower_slope + A- upper_slope = A lower_slope + A- (upper - lower slope):
        # three passes over the coefficients (they dominate the cost of CROWN).
        neg = coef.clamp(max=0)
        offset = _dot(neg, rel.upper_offset)
        if use_alpha or bool(rel.lower_offset.any()):
            offset = offset + _dot(coef - neg, rel.lower_offset)
        low = _unsqueeze_spec(rel.lower_slope, coef)
        gap = _unsqueeze_spec(rel.upper_slope, coef) - low
        return [torch.addcmul(coef * low, neg, gap)], offset
    if rule.backward is not None:
        args = node_args(node, state.bounds, state.device, state.dtype)
        if use_alpha and node.name in state.alphas:
            coefs, offset = rule.backward(node, coef, args, alpha=state.alphas[node.name])
        else:
            coefs, offset = rule.backward(node, coef, args)
        if coefs is not None:
            dyn = [c for c, name in zip(coefs, node.inputs, strict=False) if name is not None]
            return dyn, offset
        # the rule declines (unbounded operands, ...): affine nodes still have their VJP
    if node_is_affine(node, rule):
        return _vjp(state, node, rule, coef)
    return None, None  # concretise with the node's interval


def _concretize(coef: torch.Tensor, box: Interval) -> torch.Tensor:
    lo = box.lower.unsqueeze(1)
    hi = box.upper.unsqueeze(1)
    if bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all()):
        return _sum_spec(coef.clamp(min=0) * lo + coef.clamp(max=0) * hi)
    # unbounded ends: skip the 0 * inf products of the unused end
    terms = torch.where(coef > 0, coef * lo, torch.where(coef < 0, coef * hi, 0.0))
    return _sum_spec(terms)


def backward_bound(state: BoundState, start: str, coef: torch.Tensor,
                   use_alpha: bool = False, keep_input_coef: bool = False,
                   extra: dict[str, torch.Tensor] | None = None,
                   keep_coef: Collection[str] | None = None,
                   concretize_at: Collection[str] | Mapping[str, Callable] = ()
                   ) -> torch.Tensor:
    """Lower bound of coef . value(start) over the box: ``[B, S]``.

    With ``keep_input_coef`` the linear coefficients reaching the input (``[B, S, *in]``)
    are stored in ``state.input_coef`` (branching heuristics read them).
    ``keep_coef`` names values whose total coefficients (``[B, S, *shape]``, extra included)
    are stored in ``state.kept_coef[name]`` as the pass reaches them (a value that no
    coefficient reaches is left out); ``state.kept_coef`` is cleared first.
    ``extra[name]`` (``[B, S, *shape]``) is added to the coefficients reaching value ``name``:
    the terms lambda . g(value) of a Lagrangian for constraints g(value) <= 0 that hold on the
    domain (e.g. beta-CROWN's split constraints). With lambda . g <= 0 on the domain, the bound
    stays a valid lower bound for every choice of lambda that keeps that sign.
    ``concretize_at`` names values where the pass stops and uses their interval bounds
    instead of relaxing them (always sound; tighter where a relaxation is loose); a mapping
    may give, per value, a function (coef, interval) -> [B, S] lower bound of coef . value
    that also uses known facts about it (None: the interval alone).
    """
    graph = state.graph
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    pending: dict[str, torch.Tensor] = {start: coef}
    total = torch.zeros(coef.shape[:2], device=state.device, dtype=state.dtype)
    keep = set(keep_coef or ())
    if keep_coef is not None:
        state.kept_coef = {}
    for node in reversed(graph.nodes[: order[start] + 1] if start in order else ()):
        check_deadline()
        a = pending.pop(node.name, None)
        if extra is not None and node.name in extra:
            a = extra[node.name] if a is None else a + extra[node.name]
        if a is None:
            continue
        if node.name in keep:
            state.kept_coef[node.name] = a
        delta = state.deltas.get(node.name)
        if delta is not None:
            total = total - _dot(a.abs(), delta)
        if node.name in concretize_at:
            fn = concretize_at.get(node.name) if isinstance(concretize_at, Mapping) else None
            total = total + (fn or _concretize)(a, state.bounds[node.name])
            continue
        coefs, offset = _backward_node(state, node, a, use_alpha)
        if coefs is None:
            total = total + _concretize(a, state.bounds[node.name])
            continue
        if offset is not None:
            total = total + offset
        for name, c in zip(node.dynamic_inputs, coefs, strict=True):
            if c is None:
                continue
            pending[name] = pending[name] + c if name in pending else c
    input_name = graph.inputs[0].name
    for name, a in pending.items():
        if name != input_name:
            raise RuntimeError(f"backward pass left coefficients on {name!r}")
        if keep_input_coef:
            state.input_coef = a
        if name in keep:
            state.kept_coef[name] = a
        total = total + _concretize(a, state.bounds[input_name])
    return total


def _positions_to_refine(graph: Graph, name: str, interval: Interval) -> torch.Tensor:
    """[B, numel] mask of the positions whose bounds CROWN should tighten, per domain."""
    consumers = [rules().get(n.op, n.name) for n in graph.consumers(name)]
    lower, upper = interval.lower.flatten(1), interval.upper.flatten(1)
    if all(r.op == "Relu" for r in consumers):
        return (lower < 0) & (upper > 0)  # stable Relus are exact: their bounds do not matter
    return upper > lower


# Cost of one packed pass element beyond its rows (gathering its domain's bounds and
# relaxations), in units of one coefficient row.
PACK_OVERHEAD_ROWS = 2


def _rows_per_pass(counts: torch.Tensor, k: int, most: int | None = None) -> int:
    """Rows m <= ``most`` per pass element minimising (m + overhead) x number of elements,
    where a domain with c selected positions takes ceil(c / m) elements. (Without the cap a
    lone domain with 43k unstable positions packed them all into one 43k x 43k element.)"""
    c = counts[counts > 0].to(torch.float64)
    m = torch.arange(1, min(k, most or k) + 1, dtype=torch.float64, device=c.device)
    elements = torch.ceil(c.unsqueeze(0) / m.unsqueeze(1)).sum(1)
    return int(torch.argmin((m + PACK_OVERHEAD_ROWS) * elements)) + 1


def crown_interval(state: BoundState, name: str, mask: torch.Tensor,
                   alpha_iterations: int = 0) -> Interval | None:
    """CROWN bounds of value ``name`` at the positions ``mask`` [B, numel] selects (others:
    +-inf).

    Each domain bounds only its own selected positions. They are packed m to a pass element
    (a domain with c positions takes ceil(c / m) elements, each a copy of the domain's
    bounds), with m chosen per call: counts vary a lot between domains (ACAS Xu deep in
    input splitting: 7 on average, 22 at most), and padding every domain to the busiest one
    computed three times the rows needed. Elements go through the backward pass in chunks
    that hold at most MAX_COEF_ELEMENTS coefficients; the refinement is not started, or
    stops after a chunk, when what is left would take more than REFINE_TIME_SHARE of the time
    to the engines' deadline (those positions stay +-inf: the caller keeps their intervals).
    """
    shape = state.graph.shape_of(name)
    numel = math.prod(shape)
    b = state.batch
    counts = mask.sum(1)
    k = int(counts.max()) if b else 0
    if k == 0:
        return None
    width = largest_numel(state.graph)
    rows = chunk_rows(state, width)
    m = _rows_per_pass(counts, k, max(1, rows // 2))
    dom, idx, valid, per_domain = _pack(mask, counts, k, m)
    depth = _backward_size(state.graph, name)
    if not _fits(state, 2 * m * dom.shape[0] * depth, name):
        return None
    lower = torch.full((b, numel), -math.inf, device=state.device, dtype=state.dtype)
    upper = torch.full((b, numel), math.inf, device=state.device, dtype=state.dtype)
    step = max(1, rows // (2 * m))
    identity = dom.shape[0] == b and bool((per_domain == 1).all())
    record = alpha_iterations == 0 and state.linear_bounds is not None
    for start in range(0, dom.shape[0], step):
        if start and not _fits(state, 2 * m * (dom.shape[0] - start) * depth, name):
            break
        began = time.monotonic()
        sl = slice(start, start + step)
        d, i, ok = dom[sl], idx[sl], valid[sl]
        sub = state if identity and step >= b else _select_rows(state, d)
        res = _bound_rows(sub, name, i, m, alpha_iterations, record)
        rows = d.unsqueeze(1).expand(-1, m)[ok]
        lower[rows, i[ok]] = res[:, :m][ok]
        upper[rows, i[ok]] = -res[:, m:][ok]
        if record:
            _record_linear(state, sub, name, numel, d, i, ok, res)
        _rates(state)[_rate_key(state)] = (time.monotonic() - began) / (
            2 * m * d.shape[0] * depth)
    return Interval(lower.reshape(b, *shape), upper.reshape(b, *shape))


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


def chunk_rows(state: BoundState, width: int) -> int:
    """Coefficient rows (over all domains) one backward pass may hold when the widest value
    has ``width`` elements: the memory budget, and at the rate measured on this graph,
    NODE_TIME_GRANULE_S per node."""
    rate = _rates(state).get(_rate_key(state))
    if rate is None:
        return max(1, MAX_COEF_ELEMENTS // (UNMEASURED_SHARE * max(1, width)))
    rows = max(1, MAX_COEF_ELEMENTS // max(1, width))
    return max(1, min(rows, int(NODE_TIME_GRANULE_S / max(rate * width, 1e-12))))


def _backward_size(graph: Graph, name: str) -> int:
    """Values' elements a backward pass from value ``name`` may visit: the work per
    coefficient row, up to a per-op factor."""
    total = 0
    for node in graph.nodes:
        total += math.prod(node.shape)
        if node.name == name:
            break
    return max(1, total)


def _rates(state: BoundState) -> dict:
    shared = shared_rates()
    return state.rates if shared is None else shared


def _rate_key(state: BoundState) -> tuple:
    graph = state.graph
    return ("crown_row_element", graph.inputs[0].name, len(graph.nodes), graph.nodes[-1].name)


def _fits(state: BoundState, work: int, name: str) -> bool:
    """Whether ``work`` (coefficient rows x values' elements of backward passes) fits in
    REFINE_TIME_SHARE of the time left, at the rate last measured on this graph (unknown
    rate: yes; the first chunk measures it and the engines' deadline checks bound it)."""
    rate = _rates(state).get(_rate_key(state))
    if rate is None:
        return True
    need, left = rate * work, time_left()
    if need <= REFINE_TIME_SHARE * left:
        return True
    log.info("CROWN bounds of %s left to intervals: about %.1f s needed, %.1f s left",
             name, need, left)
    return False


def _bound_rows(sub: BoundState, name: str, idx: torch.Tensor, m: int,
                alpha_iterations: int, record: bool) -> torch.Tensor:
    """Lower bounds of +value and -value at positions ``idx`` [V, m] of each pass element:
    ``[V, 2m]``."""
    shape = sub.graph.shape_of(name)
    v = idx.shape[0]
    onehot = torch.zeros((v, m, math.prod(shape)), device=sub.device, dtype=sub.dtype)
    onehot.scatter_(2, idx.unsqueeze(-1), 1.0)
    coef = torch.cat([onehot, -onehot], dim=1).reshape(v, 2 * m, *shape)
    if alpha_iterations > 0:
        from bounds.engine.alpha import optimize_alpha

        with torch.enable_grad():
            res, _ = optimize_alpha(sub, name, coef, alpha_iterations)
        return res
    return backward_bound(sub, name, coef, keep_input_coef=record)


def _record_linear(state: BoundState, sub: BoundState, name: str, numel: int,
                   dom: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor,
                   res: torch.Tensor) -> None:
    """Store the input coefficients of the rows ``sub`` just bounded in
    ``state.linear_bounds[name]``: pass element e is domain ``dom[e]``, its rows are positions
    ``idx[e]`` where ``valid[e]`` (lower rows, then negated upper rows, in ``res``)."""
    a, sub.input_coef = sub.input_coef, None
    if a is None:  # no coefficient reached the input: nothing linear to keep
        return
    v, m = idx.shape
    d = state.box.lower[0].numel()
    a = a.reshape(v, 2 * m, d)
    # constant of each row's lower bound
    c = res - box_min(a, sub.box.lower.reshape(v, d), sub.box.upper.reshape(v, d))
    rec = state.linear_bounds.get(name)
    if rec is None:
        b = state.batch
        zeros = torch.zeros((b, numel, d), device=state.device, dtype=state.dtype)
        inf = torch.full((b, numel), math.inf, device=state.device, dtype=state.dtype)
        rec = state.linear_bounds[name] = LinearBounds(zeros, -inf, zeros.clone(), inf.clone())
    rows = dom.unsqueeze(1).expand(-1, m)[valid]
    pos = idx[valid]
    rec.a_lo[rows, pos] = a[:, :m][valid]
    rec.c_lo[rows, pos] = c[:, :m][valid]
    # upper bound: value <= -(lower bound of -value) = -a x - c
    rec.a_hi[rows, pos] = -a[:, m:][valid]
    rec.c_hi[rows, pos] = -c[:, m:][valid]


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


def _select_rows(state: BoundState, rows: torch.Tensor) -> BoundState:
    """The domains ``rows`` [B] bool of ``state`` as a state of their own (bounds so far)."""
    b = state.batch

    def pick(t):
        return t[rows] if t is not None and t.dim() > 0 and t.shape[0] == b else t

    sub = BoundState(state.graph, Interval(state.box.lower[rows], state.box.upper[rows]))
    sub.bounds = {k: Interval(pick(v.lower), pick(v.upper)) for k, v in state.bounds.items()}
    sub.deltas = {k: pick(d) for k, d in state.deltas.items()}
    sub.zero_output = state.zero_output
    return sub


def compute_intermediate(state: BoundState, given: dict[str, Interval] | None = None,
                         method: str = "crown", reuse_given: ReuseGiven = False,
                         alpha_iterations: int = 0) -> None:
    """Fill ``state.bounds`` for every value, and ``state.infeasible`` ([B] bool: a domain
    where some value's interval is empty, i.e. the given constraints contradict each other).

    ``method``: "ibp" (intervals only), "forward" (IBP intersected with forward-mode linear
    bounds, cheap for low-dimensional inputs) or "crown" (IBP, then backward CROWN for the
    values that relaxations need; alpha-optimised when ``alpha_iterations`` > 0).
    ``given`` bounds are intersected in. ``reuse_given`` says where a value's given bounds are
    kept without a CROWN refinement (branch-and-bound children reuse their parent's
    intermediate bounds): True for every given value, a collection of value names, or a
    mapping name -> [B] bool (per domain; True = reuse). Reuse only skips work: the result
    is never looser than the given bounds, and never looser than IBP.
    Domains found infeasible are not refined further (any bound is sound on an empty set).
    """
    graph, given = state.graph, given or {}
    # Values with no relaxed node upstream are affine in the input: IBP is already exact.
    need = (set(relaxed_inputs(graph)) - values_ibp_bounds_exactly(graph)
            if method == "crown" else set())
    info = graph.inputs[0]
    state.bounds[info.name] = Interval(state.box.lower.reshape(-1, *info.shape),
                                       state.box.upper.reshape(-1, *info.shape))
    state.infeasible = torch.zeros(state.batch, dtype=torch.bool, device=state.device)
    funcs = {}
    if method == "forward":
        funcs[info.name] = identity_functions(state.box, info.shape)
    d = state.box.lower[0].numel()
    for node in graph.nodes:
        check_deadline()
        out, delta = propagate_node(graph, node, state.bounds, state.device, state.dtype)
        if delta is not None:  # an unbounded value's allowance: huge, never 0 * inf = NaN
            delta = torch.nan_to_num(delta, posinf=torch.finfo(delta.dtype).max)
        state.deltas[node.name] = delta
        if method == "forward":
            f = propagate_functions(node, funcs, state.bounds, state.device, state.dtype)
            if f is not None:
                f = f.widen(delta)
                out = intersect(out, f.concretize(state.box))
            out = intersect(out, given.get(node.name))
            funcs[node.name] = f if f is not None else constant_functions(out, d)
        out = intersect(out, given.get(node.name))
        state.bounds[node.name] = out
        reuse = _reused_rows(reuse_given, given, node.name)
        if node.name in need and reuse is not True:
            mask = _positions_to_refine(graph, node.name, out) & ~state.infeasible.unsqueeze(1)
            if reuse is not False:
                mask = mask & ~reuse.to(mask.device).unsqueeze(1)
            refined = crown_interval(state, node.name, mask, alpha_iterations)
            if refined is not None:
                out = intersect(out, refined)
                state.bounds[node.name] = out
        empty = out.lower > out.upper
        state.infeasible |= empty.reshape(empty.shape[0], -1).any(1)
