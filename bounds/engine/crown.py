"""CROWN: backward linear bound propagation through the graph.

For a start value z and coefficients A (``[B, S, *shape(z)]``) we compute a lower bound of A.z
over the input box by walking the graph backwards: affine nodes pass A through exactly (their
own ``backward`` or the vector-Jacobian product of ``forward``), elementwise nonlinear nodes
replace themselves by their linear relaxation (upper plane where A < 0, lower plane where
A >= 0), nonlinear nodes with a ``backward`` rule (window max, products of two perturbed values)
relax themselves from their inputs' bounds (with ``alpha=`` under alpha-CROWN), and a node with
no backward rule, or whose planes would overflow, is concretised with its interval bounds
(always sound, just looser). Float32 rounding enters as a bounded perturbation at each node
(see rounding.py). Rows that start on single neurons of a convolutional value travel as
windows over their receptive fields (``patches``, ``patches_step``) until a window grows past
half its value or meets an op without a window step; the numbers are the dense pass's.

The pass reads the intermediate bounds it is given (``intermediate.compute_intermediate``) and
returns its results as a value (``BackwardResult``); what later passes may reuse is in the
``PassCache`` the caller passes in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import torch

from bounds.engine import adjoint_precision
from bounds.engine import patches_step as windows
from bounds.engine.constants import as_tensor, node_args
from bounds.engine.deadline import check_deadline, shared_rates, timed_chunks
from bounds.engine.kink_step import kink_step
from bounds.engine.patches import Patches
from bounds.engine.results import BackwardResult, ColumnAlpha, Intermediates, PassCache
from bounds.float32_upper import nonneg_sum_upper
from bounds.graph import Node
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from bounds.rules.linear import forward_products
from bounds.rules.tangents import DomainError
from bounds.types import Interval, Relaxation

# Largest number of coefficient elements one backward pass may hold (memory budget).
MAX_COEF_ELEMENTS = 1 << 24
# One backward step through one node should take at most about this long, so that the
# deadline checks between nodes come often enough (a Conv VJP on 2^24 coefficients took ~1 s);
# until a rate is measured, passes hold an eighth of the memory budget.
NODE_TIME_GRANULE_S = 0.2
UNMEASURED_SHARE = 8
# Rows of an affine node's first VJP chunk, before its rate is measured: this many elements
# of the wider of its input and output.
VJP_PROBE_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class _Pass:
    """What one backward pass reads: the intermediate bounds, the alphas of the relaxations it
    optimises (empty: the rules' default relaxations) and the cache it may reuse."""

    inter: Intermediates
    alphas: Mapping[str, torch.Tensor]
    cache: PassCache
    # the graph input's name where a weighted node that is its only consumer may bound its
    # own contribution over the input box (``_input_step``): the pass returns no input
    # coefficients; None: they are kept
    closes_input: str | None = None

    @property
    def use_alpha(self) -> bool:
        return bool(self.alphas)


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


def default_relaxation(inter: Intermediates, cache: PassCache, node: Node, rule):
    """The rule's default planes of elementwise ``node`` ([B, *shape], memoised in ``cache``
    for these bounds), or None where they would overflow (DomainError: concretise)."""
    memo = cache.relaxations(inter.bounds)
    if node.name not in memo:
        x = inter.bounds[node.dynamic_inputs[0]]
        try:
            memo[node.name] = rule.relax(node, x.lower, x.upper)
        except DomainError:
            memo[node.name] = None
    return memo[node.name]


def _relaxation(p: _Pass, node: Node, rule):
    """The node's planes, or None where they would overflow (DomainError: concretise)."""
    alpha = p.alphas.get(node.name)
    if isinstance(alpha, ColumnAlpha):
        return _column_relaxation(p, node, rule, alpha)
    if alpha is not None:
        x = p.inter.bounds[node.dynamic_inputs[0]]
        try:
            return _alpha_relaxation(node, rule, x.lower.unsqueeze(1), x.upper.unsqueeze(1),
                                     alpha)
        except DomainError:
            return None
    return default_relaxation(p.inter, p.cache, node, rule)


def _window_planes(p: _Pass, node: Node, rule):
    """The node's planes for a window step and, for the default planes (memoised per node
    for these bounds), their slope gap upper_slope - lower_slope (else None)."""
    rel = _relaxation(p, node, rule)
    if rel is None or node.name in p.alphas:
        return rel, None
    memo = p.cache.relaxations(p.inter.bounds)
    key = ("slope gap", node.name)  # (the memo's other keys are node names)
    if key not in memo:
        memo[key] = rel.upper_slope - rel.lower_slope
    return rel, memo[key]


def _column_relaxation(p: _Pass, node: Node, rule, alpha: ColumnAlpha):
    """Planes [B, S, *shape]: the alpha planes at ``alpha.index``, the default elsewhere
    (None where either would overflow)."""
    base = default_relaxation(p.inter, p.cache, node, rule)
    if base is None:
        return None
    x = p.inter.bounds[node.dynamic_inputs[0]]
    idx, values = alpha.index, alpha.values
    lower = x.lower.flatten(1)[:, idx].unsqueeze(1)
    upper = x.upper.flatten(1)[:, idx].unsqueeze(1)
    try:
        rel = _alpha_relaxation(node, rule, lower, upper, values)
    except DomainError:
        return None
    b, s = values.shape[:2]

    def merge(full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        full = torch.broadcast_to(full, x.lower.shape).reshape(b, 1, -1).expand(b, s, -1)
        return full.index_copy(2, idx, part.to(full.dtype)).reshape(b, s, *node.shape)

    return Relaxation(*(merge(f, c) for f, c in zip(_planes(base), _planes(rel), strict=True)))


def _planes(rel: Relaxation) -> tuple[torch.Tensor, ...]:
    return rel.lower_slope, rel.lower_offset, rel.upper_slope, rel.upper_offset


def _alpha_relaxation(node: Node, rule, lower, upper, alpha: torch.Tensor) -> Relaxation:
    """``rule.relax`` with per-row ``alpha`` [B, S, *shape], in chunks of spec rows sized by
    the measured cost (curves with many spec rows, e.g. thousands of disjuncts, take seconds
    per node), with the clock checked between chunks."""
    def relax_rows(start: int, stop: int) -> list[torch.Tensor]:
        a = alpha[:, start:stop]
        rel = rule.relax(node, lower, upper, a)
        return [t.expand(a.shape) for t in (rel.lower_slope, rel.lower_offset,
                                            rel.upper_slope, rel.upper_offset)]

    parts = timed_chunks(alpha.shape[1], alpha[:, :1].numel(), relax_rows,
                         key=("alpha relax", node.op))
    if len(parts) == 1:
        return Relaxation(*parts[0])
    return Relaxation(*(torch.cat([p[i] for p in parts], dim=1) for i in range(4)))


def _vjp_chunk(inter: Intermediates, node: Node, rule, rows: torch.Tensor,
               work: torch.dtype | None = None) -> list:
    """Input coefficients ``[R, *in_shape]`` (None: unused input) of an affine node for
    output coefficients ``rows`` ``[R, *node.shape]``: the vector-Jacobian product, by the
    rule's ``backward`` where it has one (the exact adjoint: Conv's transposed convolution,
    no forward recomputation), else by autograd through ``forward``. ``work``: the dtype of
    the rule's adjoint (``adjoint_precision``; the result is in the rows' dtype)."""
    if rule.backward is not None:
        coefs, _ = _rule_adjoint(inter, node, rule, rows.unsqueeze(0), work)
        if coefs is not None:  # an affine map's adjoint: the offset is A . f(0), see _vjp
            return [None if c is None else c[0] for c in coefs]
    primals, full = [], []
    for pos, name in enumerate(node.inputs):
        if name is None:
            full.append(as_tensor(node.consts[pos], inter.device, inter.dtype))
        else:
            p = torch.zeros((rows.shape[0], *inter.graph.shape_of(name)), device=inter.device,
                            dtype=inter.dtype, requires_grad=True)
            primals.append(p)
            full.append(p)
    with torch.enable_grad():
        out = rule.forward(node, full)
        # the VJP as the gradient of sum(out * rows): the same numbers (the sum's gradient is
        # exactly 1), while grad_outputs would make torch import its symbolic-shapes module
        # (sympy) on the first call, ~0.9 s inside the first bound pass of a run
        return list(torch.autograd.grad((out * rows).sum(), primals,
                                        create_graph=rows.requires_grad, allow_unused=True))


def _rule_adjoint(inter: Intermediates, node: Node, rule, coef: torch.Tensor,
                  work: torch.dtype | None):
    """The rule's backward step of ``coef`` ([B, S, *shape]) with its arithmetic in ``work``
    (None: the pass's dtype): (input coefficients per dynamic input in ``coef``'s dtype, or
    None where the rule declines; the rule's offset, in ``work``)."""
    dtype = inter.dtype if work is None else work
    args = node_args(node, inter.bounds, inter.device, dtype)
    if work is not None:  # the caller takes the offset (A.f(c)): no bias term to sum here
        args = args[:2] + [None] * (len(args) - 2)
    cast = coef if work is None else adjoint_precision.work_cast(node, coef, work)
    coefs, offset = rule.backward(node, cast, args)
    if coefs is None:
        return None, None
    dyn = [c for c, name in zip(coefs, node.inputs, strict=False) if name is not None]
    if work is not None:  # (one copy, whatever layout the kernel left)
        dyn = [None if c is None else c.to(coef.dtype, memory_format=torch.contiguous_format)
               for c in dyn]
    return dyn, offset


def rates(cache: PassCache) -> dict:
    """Measured seconds per unit of work: the deadline block's when there is one (passes of
    the same block learn from each other), else the cache's."""
    shared = shared_rates()
    return cache.rates if shared is None else shared


def _vjp_rows(p: _Pass, node: Node, rule, flat: torch.Tensor,
              work: torch.dtype | None = None) -> list:
    """``_vjp_chunk`` over all rows of ``flat``, in chunks of about NODE_TIME_GRANULE_S each
    at the rate measured on this node, with a deadline check between chunks (one wide Conv,
    ConvTranspose or Resize step on thousands of rows took seconds)."""
    n, measured = flat.shape[0], rates(p.cache)
    key = ("vjp_row", node.name, node.op)
    width = _width(p.inter.graph, node)
    parts, first = [], 0
    while first < n:
        rate = measured.get(key)
        size = max(1, VJP_PROBE_ELEMENTS // width if rate is None
                   else int(NODE_TIME_GRANULE_S / max(rate, 1e-12)))
        if first:
            check_deadline()
        began = time.monotonic()
        parts.append(_vjp_chunk(p.inter, node, rule, flat[first:first + size], work))
        measured[key] = (time.monotonic() - began) / min(size, n - first)
        first += size
    if len(parts) == 1:
        return parts[0]
    return [None if g[0] is None else torch.cat(g) for g in zip(*parts, strict=True)]


def _width(graph, node: Node) -> int:
    return max([math.prod(node.shape)]
               + [math.prod(graph.shape_of(x)) for x in node.dynamic_inputs])


def _one_step(p: _Pass, node: Node, coef: torch.Tensor) -> bool:
    """Whether an affine node's rows fit one step of about NODE_TIME_GRANULE_S (at its
    measured rate; unmeasured: VJP_PROBE_ELEMENTS elements of its wider side)."""
    rows = coef.shape[0] * coef.shape[1]
    rate = rates(p.cache).get(("vjp_row", node.name, node.op))
    if rate is None:
        return rows * _width(p.inter.graph, node) <= VJP_PROBE_ELEMENTS
    return rows * rate <= NODE_TIME_GRANULE_S


def _timed_rule_step(p: _Pass, node: Node, rule, coef: torch.Tensor,
                     work: torch.dtype | None = None):
    """The rule's backward step on all rows at once, its seconds per row measured (None:
    the rule declines). With a ``work`` dtype the offset is None: the caller's (_step)."""
    began = time.monotonic()
    coefs, offset = _rule_adjoint(p.inter, node, rule, coef, work)
    if coefs is None:
        return None
    rows = coef.shape[0] * coef.shape[1]
    rates(p.cache)[("vjp_row", node.name, node.op)] = (time.monotonic() - began) / max(1, rows)
    return coefs, (offset if work is None else None)


def _zero_output(p: _Pass, node: Node, rule) -> torch.Tensor:
    """The affine node's output at a zero input (cached: it depends on the graph only)."""
    zero = p.cache.zero_output.get(node.name)
    if zero is None:
        inter = p.inter
        with torch.no_grad():
            args = [as_tensor(node.consts[i], inter.device, inter.dtype) if name is None
                    else torch.zeros((1, *inter.graph.shape_of(name)), device=inter.device,
                                     dtype=inter.dtype)
                    for i, name in enumerate(node.inputs)]
            zero = rule.forward(node, args)[0].detach()
        p.cache.zero_output[node.name] = zero
    return zero


def _zero_offset(p: _Pass, node: Node, rule, coef: torch.Tensor) -> torch.Tensor | None:
    """A . f(0) of an affine node (None: f(0) = 0)."""
    zero = _zero_output(p, node, rule)
    return None if not torch.any(zero != 0) else _sum_spec(coef * zero)


def _vjp(p: _Pass, node: Node, rule, coef: torch.Tensor, work: torch.dtype | None = None):
    """Backward step of an affine node: A -> A J, offset A . f(0) (None with a ``work``
    dtype: the caller's, _step)."""
    b, s = coef.shape[:2]
    grads = _vjp_rows(p, node, rule, coef.reshape(b * s, *node.shape), work)
    result = []
    for name, g in zip(node.dynamic_inputs, grads, strict=True):
        shape = p.inter.graph.shape_of(name)
        result.append(None if g is None else g.reshape(b, s, *shape))
    return result, (_zero_offset(p, node, rule, coef) if work is None else None)


def _relaxed_step(p: _Pass, node: Node, rule, coef: torch.Tensor):
    """Backward step of an elementwise node through its planes (None, None: concretise)."""
    alpha = p.alphas.get(node.name)
    if isinstance(alpha, ColumnAlpha):
        return _column_step(p, node, rule, coef, alpha)
    if alpha is not None and rule.alpha_planes is not None and alpha.dim() == coef.dim():
        fused = kink_step(p.inter, p.cache, node, rule, coef, alpha)
        if fused is not None:
            return fused
    return _planes_step(p, _relaxation(p, node, rule), coef)


def _planes_step(p: _Pass, rel: Relaxation | None, coef: torch.Tensor):
    """``_relaxed_step`` through the planes ``rel`` (None: concretise)."""
    if rel is None:
        return None, None
    # A -> A+ lower_slope + A- upper_slope = A lower_slope + A- (upper - lower slope):
    # three passes over the coefficients (they dominate the cost of CROWN).
    neg = coef.clamp(max=0)
    offset = _dot(neg, rel.upper_offset)
    if windows.has_offset(rel.lower_offset):
        offset = offset + _dot(coef - neg, rel.lower_offset)
    low = _unsqueeze_spec(rel.lower_slope, coef)
    gap = _unsqueeze_spec(rel.upper_slope, coef) - low
    return [torch.addcmul(coef * low, neg, gap)], offset


def _column_step(p: _Pass, node: Node, rule, coef: torch.Tensor, alpha: ColumnAlpha):
    """``_relaxed_step`` with the alpha planes at ``alpha.index`` and the default planes
    elsewhere (``_column_relaxation``), without building [B, S, *shape] planes: the default
    ones broadcast over the spec rows, then the columns' entries are replaced. Every entry
    and every offset term is the same product of the same numbers as the merged planes'."""
    base = default_relaxation(p.inter, p.cache, node, rule)
    if base is None:
        return None, None
    idx = alpha.index
    fixed = _column_parts(p, node, base, idx)
    try:
        col = _alpha_relaxation(node, rule, fixed.lower, fixed.upper, alpha.values)
    except DomainError:
        return None, None
    b, s = coef.shape[:2]
    flat = coef.reshape(b, s, -1)
    neg = flat.clamp(max=0)
    # (gather and scatter: torch's index_select along a last axis, which index_copy's
    # gradient takes, is 10x slower)
    at = idx.view(1, 1, -1).expand(b, s, -1)
    cols = torch.gather(flat, 2, at)
    neg_cols = cols.clamp(max=0)
    offset = (_dot(neg, fixed.upper_offset)
              + _sum_spec(neg_cols * col.upper_offset.to(flat.dtype)))
    if windows.has_offset(base.lower_offset) or windows.has_offset(col.lower_offset):
        offset = offset + (_dot(flat - neg, fixed.lower_offset)
                           + _sum_spec((cols - neg_cols) * col.lower_offset.to(flat.dtype)))
    out = torch.addcmul(flat * fixed.lower_slope, neg, fixed.gap)
    col_low = col.lower_slope.to(flat.dtype)
    at_cols = torch.addcmul(cols * col_low, neg_cols, col.upper_slope.to(flat.dtype) - col_low)
    # (in place: addcmul's gradient does not read its output)
    return [out.scatter_(2, at, at_cols).reshape(coef.shape)], offset


@dataclass(frozen=True)
class _ColumnParts:
    """What ``_column_step`` reuses across alphas for one node, column index and input
    interval (``source``; the work dtype's view replaces intervals in place): the input bounds
    at the columns ([B, 1, k]), the default planes' lower slope and slope gap ([B, 1, n]) and
    offsets with zeros at the columns."""

    index: torch.Tensor
    source: Interval
    lower: torch.Tensor
    upper: torch.Tensor
    lower_slope: torch.Tensor
    gap: torch.Tensor
    lower_offset: torch.Tensor
    upper_offset: torch.Tensor


def _column_parts(p: _Pass, node: Node, base: Relaxation, idx: torch.Tensor) -> _ColumnParts:
    """``_ColumnParts`` of ``node`` at ``idx`` (memoised for these bounds, this index and
    the node's input interval)."""
    memo = p.cache.relaxations(p.inter.bounds)
    key = ("column parts", node.name)  # (the memo's other keys are node names)
    x = p.inter.bounds[node.dynamic_inputs[0]]
    found = memo.get(key)
    if found is not None and found.index is idx and found.source is x:
        return found

    def dense(t: torch.Tensor) -> torch.Tensor:  # a default plane, [B or 1, 1, n]
        return torch.broadcast_to(t, x.lower.shape).reshape(x.lower.shape[0], 1, -1)

    low = dense(base.lower_slope)
    memo[key] = _ColumnParts(idx, x, x.lower.flatten(1)[:, idx].unsqueeze(1),
                             x.upper.flatten(1)[:, idx].unsqueeze(1), low,
                             dense(base.upper_slope) - low,
                             dense(base.lower_offset).index_fill(2, idx, 0.0),
                             dense(base.upper_offset).index_fill(2, idx, 0.0))
    return memo[key]


def _backward_node(p: _Pass, node: Node, coef: torch.Tensor, work: torch.dtype | None = None):
    """Returns (list of coef per dynamic input, offset [B,S] or None). ``work``: the dtype
    of an affine node's adjoint (``adjoint_precision``; None: the pass's)."""
    rule = rules().get(node.op, node.name)
    if rule.relax is not None and rule.traits.elementwise:
        return _relaxed_step(p, node, rule, coef)
    if node_is_affine(node, rule):
        if rule.backward is not None and _one_step(p, node, coef):
            out = _timed_rule_step(p, node, rule, coef, work)
            if out is not None:
                return out
        # the rule's adjoint (or autograd) in row chunks with deadline checks between them
        return _vjp(p, node, rule, coef, work)
    if rule.backward is not None:
        args = node_args(node, p.inter.bounds, p.inter.device, p.inter.dtype)
        alpha = p.alphas.get(node.name)
        if alpha is not None:
            coefs, offset = rule.backward(node, coef, args, alpha=alpha)
        else:
            coefs, offset = rule.backward(node, coef, args)
        if coefs is not None:
            dyn = [c for c, name in zip(coefs, node.inputs, strict=False) if name is not None]
            return dyn, offset
    return None, None  # concretise with the node's interval


Concretizers = Collection[str] | Mapping[str, Callable]


def backward_bound(inter: Intermediates, start: str, coef: torch.Tensor | Patches, *,
                   alphas: Mapping[str, torch.Tensor] | None = None,
                   extra: Mapping[str, torch.Tensor] | None = None,
                   keep: Collection[str] = (), keep_input: bool = False,
                   concretize_at: Concretizers = (),
                   cache: PassCache | None = None) -> BackwardResult:
    """Lower bound of coef . value(start) over the box (``.lower`` [B, S]), from the
    intermediate bounds ``inter``.

    ``alphas[node]``: the relaxation parameters of the nodes they name (alpha-CROWN; others
    keep the rules' default relaxations). ``extra[name]`` (``[B, S, *shape]``) is added to the
    coefficients reaching value ``name``: the terms lambda . g(value) of a Lagrangian for
    constraints g(value) <= 0 that hold on the domain (e.g. beta-CROWN's split constraints).
    With lambda . g <= 0 on the domain, the bound stays a valid lower bound for every choice of
    lambda that keeps that sign. ``keep`` names values whose total coefficients (extra
    included) the result carries in ``kept_coef``; with ``keep_input`` it carries those that
    reached the input in ``input_coef`` (branching heuristics read them).
    ``coef`` may be window coefficients (``patches.neuron_rows``: rows of single neurons of a
    convolutional value, without a dense [B, S, *shape] start); windows also start here from
    dense rows that are spatially sparse.
    ``concretize_at`` names values where the pass stops and uses their interval bounds
    instead of relaxing them (always sound; tighter where a relaxation is loose); a mapping
    may give, per value, a function (coef, interval) -> [B, S] lower bound of coef . value
    that also uses known facts about it (None: the interval alone). ``cache``: reused work
    (default: none).
    """
    graph = inter.graph
    first = graph.inputs[0].name
    closes = (first if not (keep_input or first in keep) and first not in concretize_at
              and len(graph.consumers(first)) == 1 else None)
    p = _Pass(inter, alphas or {}, PassCache() if cache is None else cache, closes)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    pending: dict = {start: windows.start(graph, start, coef)}
    # windows are tried once: at the start, or at the first convolutional value reached
    tried = bool(windows.conv_like(graph, start))
    total = torch.zeros(coef.shape[:2], device=inter.device, dtype=inter.dtype)
    keep, kept = set(keep), {}
    for node in reversed(graph.nodes[: order[start] + 1] if start in order else ()):
        check_deadline()
        a = pending.pop(node.name, None)
        if a is not None and (node.name in keep or node.name in concretize_at
                              or (extra is not None and node.name in extra)):
            a = windows.dense(a)
        elif a is not None and not tried and windows.conv_like(graph, node.name):
            a, tried = windows.start(graph, node.name, a), True
        if extra is not None and node.name in extra:
            a = extra[node.name] if a is None else a + extra[node.name]
        if a is None:
            continue
        if node.name in keep:
            kept[node.name] = a
        total = _step(p, node, a, total, pending, concretize_at)
    input_coef = pending.pop(graph.inputs[0].name, None)
    _no_coef_left(pending)
    if isinstance(input_coef, Patches) and (keep_input or graph.inputs[0].name in keep):
        input_coef = input_coef.to_dense()
    if input_coef is not None:
        if graph.inputs[0].name in keep:
            kept[graph.inputs[0].name] = input_coef
        total = total + windows.concretize(input_coef, inter.bounds[graph.inputs[0].name])
    if isinstance(input_coef, Patches):
        input_coef = None
    return BackwardResult(total, input_coef if keep_input else None, kept)


def _step(p: _Pass, node: Node, a, total: torch.Tensor, pending: dict,
          concretize_at: Concretizers) -> torch.Tensor:
    """One node of the pass: its rounding allowance and offset added to ``total`` (returned),
    its input coefficients added to ``pending``. ``a``: dense or window coefficients."""
    delta = p.inter.deltas.get(node.name)
    # |a|: the allowance's, and the float32 adjoint's range check (one pass for both)
    absolute = None if delta is None else _absolute(a)
    centred = (None if node.name in concretize_at
               else _float32_adjoint(p, node, a, delta, absolute))
    if delta is not None:
        total = total - _allowance(absolute, delta, centred)
    if node.name in concretize_at:
        fn = concretize_at.get(node.name) if isinstance(concretize_at, Mapping) else None
        return total + (fn or windows.concretize)(a, p.inter.bounds[node.name])
    work = None if centred is None else torch.float32
    coefs, offset = None, None
    if isinstance(a, Patches):
        step = windows.window_step(p.inter, node, a, lambda n, r: _window_planes(p, n, r),
                                   work)
        if step is None:
            a = a.to_dense()
        else:
            coefs, offset = step
    if coefs is None:
        coefs, offset = _backward_node(p, node, a, work)  # (work: offset None)
    if coefs is None:
        return total + windows.concretize(a, p.inter.bounds[node.name])
    if centred is not None and node.dynamic_inputs[0] == p.closes_input:
        # x is the input box [c - r, c + r]: min of A.f(c) + A_in (x - c) is A.f(c) - |A_in| r
        # (the concretisation of the general case below, without its A_in . c both ways)
        return total + (_coef_dot(a, centred.output) - centred.underflow
                        - _coef_dot(_absolute(coefs[0]), centred.radius))
    if centred is not None:  # A.y = A.f(c) + A W (x - c): the adjoint's error acts on x - c
        offset = (_coef_dot(a, centred.output) - _coef_dot(coefs[0], centred.centre)
                  - centred.underflow)
    if offset is not None:
        total = total + offset
    for name, c in zip(node.dynamic_inputs, coefs, strict=True):
        if c is not None:
            windows.accumulate(pending, name, c)
    return total


def _absolute(a):
    """|a| of dense or window coefficients."""
    return a.with_values(a.values.abs()) if isinstance(a, Patches) else a.abs()


def _allowance(absolute, delta: torch.Tensor, centred: _Centred | None) -> torch.Tensor:
    """|a| . (delta + the float32 adjoint's error allowance, if any) ([B, S]), from
    ``absolute`` = |a|; rows with fewer nonzero coefficients than the adjoint's length take
    the smaller error bound of their count (``adjoint_precision.row_scale``)."""
    if centred is None:
        return _coef_dot(absolute, delta)
    scale = adjoint_precision.row_scale(centred.length, absolute)
    if scale is None:
        return _coef_dot(absolute, centred.allowance)
    return _coef_dot(absolute, delta) + scale * _coef_dot(absolute, centred.spread)


def _coef_dot(a, values: torch.Tensor) -> torch.Tensor:
    """sum over positions of dense or window coefficients times ``values`` [B, *shape]."""
    return a.dot(values) if isinstance(a, Patches) else _dot(a, values)


@dataclass(frozen=True)
class _Centred:
    """What a float32 adjoint of a weighted node y = W x + b needs (``adjoint_precision``),
    from the bounds of its input x ([B, *shape] each): the centre c of x's interval, f(c) =
    W c + b, the allowance (the node's rounding allowance plus gamma(k + 3) |W| r, r the
    interval's radius; ``spread``: that second part alone) and the underflow term ([B, 1]).
    ``length``: the adjoint's most products per entry (``adjoint_precision.adjoint_length``)."""

    centre: torch.Tensor
    radius: torch.Tensor
    output: torch.Tensor
    allowance: torch.Tensor
    spread: torch.Tensor
    underflow: torch.Tensor
    length: int


def _float32_adjoint(p: _Pass, node: Node, a, delta, absolute=None) -> _Centred | None:
    """The parts of ``node``'s float32 adjoint of ``a`` (memoised for these bounds), or None
    where its adjoint keeps the pass's dtype: ``adjoint_precision.uses_float32``, with the
    coefficients inside float32's range and the input's interval finite. ``absolute``: |a|
    where the caller has it."""
    values = a.values if isinstance(a, Patches) else a
    if not adjoint_precision.uses_float32(node, values, delta):
        return None
    if absolute is None:
        absolute = _absolute(a)
    magnitude = absolute.values if isinstance(absolute, Patches) else absolute
    if not bool(magnitude.max() <= adjoint_precision.LARGEST_COEF):
        return None
    memo = p.cache.relaxations(p.inter.bounds)
    key = ("float32 adjoint", node.name)  # (the memo's other keys are node names)
    if key not in memo:
        memo[key] = _centred(p, node, delta)
    return memo[key]


def _centred(p: _Pass, node: Node, delta: torch.Tensor) -> _Centred | None:
    inter = p.inter
    x = inter.bounds[node.dynamic_inputs[0]]
    if not (bool(torch.isfinite(x.lower).all()) and bool(torch.isfinite(x.upper).all())):
        return None
    rule = rules().get(node.op, node.name)
    args = node_args(node, inter.bounds, inter.device, inter.dtype)
    centre, radius = (x.lower + x.upper) / 2, (x.upper - x.lower) / 2
    with torch.no_grad():
        output = rule.forward(node, [centre, *args[1:]])
        spread = nonneg_sum_upper(lambda ops: rule.forward(node, list(ops)),
                                  [radius, args[1].abs()],
                                  forward_products(node.op, args[1].shape, node.attrs),
                                  output.numel())
    spread = adjoint_precision.adjoint_gamma(node) * spread
    underflow = adjoint_precision.underflow_error(node) * radius.flatten(1).sum(1, keepdim=True)
    return _Centred(centre, radius, output, delta + spread, spread, underflow,
                    adjoint_precision.adjoint_length(node))


def _no_coef_left(pending: dict) -> None:
    """Every coefficient but the input's has been passed back (a graph-order invariant)."""
    for name in pending:
        raise RuntimeError(f"backward pass left coefficients on {name!r}")
