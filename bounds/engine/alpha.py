"""alpha-CROWN: optimise the free relaxation parameters by gradient ascent (Relu lower slopes,
tangent points of smooth ops, window-max lower planes, McCormick plane mixing of products).

Any alpha in the allowed range gives a sound bound, so optimisation only ever tightens: we keep
the best bound (and its alphas) seen per domain and spec row, and return them for warm starts
(the loop: ``optimize.maximize``, shared with beta-CROWN).

(The op tables ``ALPHA_OPS``, ``STRUCTURED_ALPHA_OPS``, ``alpha_ranges`` and the starting
alphas ``init_alphas`` live in ``alpha_ops`` and are re-exported here.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bounds.engine.alpha_ops import (
    ALPHA_OPS,
    STRUCTURED_ALPHA_OPS,
    _initial,
    alpha_ranges,
    init_alphas,
)
from bounds.engine.analysis import largest_constant, largest_numel
from bounds.engine.crown import backward_bound, default_relaxation
from bounds.engine.guide import chain, chain_guide
from bounds.engine.optimize import Group, Schedule, maximize
from bounds.engine.results import ColumnAlpha, Intermediates, PassCache
from bounds.engine.work_dtype import (
    MIN_WORK_ELEMENTS,
    cast_alphas,
    cast_coef,
    lowered_view,
    lowers,
)
from bounds.registry import rules
from bounds.rules.common import KINK_ALPHA, TANGENT_ALPHA

__all__ = ["ALPHA_OPS", "STRUCTURED_ALPHA_OPS", "alpha_ranges", "init_alphas", "optimize_alpha"]


# Step size of tangent-point alphas (the smooth ops: alpha places the tangent point at
# l + alpha (u - l)) relative to the others' (Relu-like slopes): Adam moves every alpha by
# about the step size, which on the wide intervals of deep smooth nets moves the tangent point
# by units. ERAN 6x200 sigmoid, mnist_spec_idx_6553, worst row with intermediate alpha: step
# 0.1: -2.57 (5 iterations), -2.02 (10), -0.004 (20); step 0.05: -0.39, +1.13, +1.78; on
# 5747 and 56 equal or better. ERAN 9x200 Relu slopes were looser with smaller steps, so they
# keep the full step.
TANGENT_STEP_SHARE = 0.5
# Sparse alpha: a position of an elementwise node gets an alpha only where the gap between its
# default planes exceeds this share of the node's largest gap (over the batch); elsewhere alpha
# could gain at most that gap per unit of coefficient, and the pass skips its curve work.
COLUMN_GAP_SHARE = 1e-3
# A Relu-like kink whose columns are more than this share of its positions takes a dense
# alpha: the columns' gather and scatter (and their gradients) then cost more than the
# positions left out save, and a kink's alpha changes no plane there (stable positions: the
# rule ignores it; the others start at the default slope, which alpha may only improve on).
# TinyYOLO over IBP intermediates, 95% columns: 2.27 -> 1.96 CPU s a pass, the same bound.
DENSE_KINK_SHARE = 0.5


def plane_gap(rel, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Largest vertical distance between the upper and lower planes of ``rel`` on [lower,
    upper] (a linear function of x: at an end); unbounded or undefined ends give +inf."""
    ds = rel.upper_slope - rel.lower_slope
    db = rel.upper_offset - rel.lower_offset
    gap = torch.maximum(ds * lower + db, ds * upper + db)
    return torch.nan_to_num(gap, nan=math.inf)


def alpha_positions(inter: Intermediates, cache: PassCache, node) -> torch.Tensor | None:
    """Flat positions of elementwise ``node`` worth an alpha (COLUMN_GAP_SHARE); None: all of
    them (or the default planes overflow: the dense path decides)."""
    rule = rules().get(node.op)
    base = default_relaxation(inter, cache, node, rule)
    if base is None:
        return None
    x = inter.bounds[node.dynamic_inputs[0]]
    gap = plane_gap(base, x.lower, x.upper).reshape(x.lower.shape[0], -1).amax(0)
    finite = gap[torch.isfinite(gap)]
    top = float(finite.max()) if finite.numel() else 0.0
    keep = (gap > COLUMN_GAP_SHARE * top) & (gap > 0)
    if bool(keep.all()) or (rule.alpha is KINK_ALPHA
                            and int(keep.sum()) > DENSE_KINK_SHARE * keep.numel()):
        return None
    return keep.nonzero().flatten()


def column_alphas(inter: Intermediates, n_spec: int, cache: PassCache,
                  warm: dict | None = None, before: str | None = None) -> dict:
    """Elementwise nodes' alphas upstream of ``before``: a ``ColumnAlpha`` [B, S, k] at the
    positions ``alpha_positions`` picks (a dense tensor where it picks all; no entry where
    it picks none), warm-started from dense ``warm`` alphas of the right shape."""
    out = {}
    for node in inter.graph.nodes:
        if node.name == before:
            break
        if node.op not in ALPHA_OPS or not rules().get(node.op).alpha.applies(node):
            continue
        idx = alpha_positions(inter, cache, node)
        start = _initial(inter, node, n_spec)
        w = None if warm is None else warm.get(node.name)
        if w is not None and w.shape == start.shape:
            start = w
        if idx is None:
            out[node.name] = start.detach().clone().requires_grad_(True)
        elif idx.numel():
            cols = start.flatten(2)[:, :, idx].detach().clone().requires_grad_(True)
            out[node.name] = ColumnAlpha(idx, cols)
    return out


def dense_alphas(inter: Intermediates, n_spec: int, found: dict, columns: dict) -> dict:
    """``found`` with its column alphas written into dense [B, S, *shape] alphas (the rule's
    initial alpha at the other positions)."""
    out = {}
    for name, value in found.items():
        if name not in columns:
            out[name] = value
            continue
        node = inter.graph.node(name)
        start = _initial(inter, node, n_spec)
        flat = start.reshape(*start.shape[:2], -1).clone()
        flat[:, :, columns[name]] = value.detach().to(flat.dtype)
        out[name] = flat.reshape(start.shape)
    return out


def optimize_alpha(inter: Intermediates, start: str, coef: torch.Tensor, iterations: int = 20,
                   lr: float = 0.1, warm: dict | None = None,
                   stop: Callable[[torch.Tensor], bool] | None = None,
                   cache: PassCache | None = None, sparse: bool = True,
                   known: torch.Tensor | None = None,
                   work_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict]:
    """Best lower bounds of coef . value(start) over alpha; returns (lower [B,S], alphas).

    With ``sparse`` (the default) elementwise nodes get alphas only at the positions where
    their default planes leave a gap worth optimising (``columns.column_alphas``: stable
    Relus, saturated sigmoids keep the default planes); the alphas returned are dense
    ([B, S, *shape], the rule's initial alpha elsewhere) either way. ``known`` [B, S]: a
    bound the caller already has from the rules' default relaxation (CROWN), which the loop
    starts from instead of recomputing it. ``work_dtype`` (e.g. float32 on float64 bounds,
    where the passes are large enough to gain: ``work_dtype.lowers``): the iterations run
    in that dtype and only pick the alphas; the bound returned is the better of ``known``
    (or the default pass) and one pass in ``inter``'s dtype with the alphas found.
    """
    cache = PassCache() if cache is None else cache
    loop = _Loop(iterations, lr, stop, sparse)
    rows = coef.shape[0] * coef.shape[1]
    view = lowered_view(inter, cache, work_dtype) if iterations > 0 and lowers(
        inter, work_dtype, rows, largest_numel(inter.graph),
        largest_constant(inter.graph)) else None
    if iterations > 0 and isinstance(coef, torch.Tensor) and chain(inter.graph, start):
        guided = _optimize_guided(inter, start, coef, loop, warm, cache, known,
                                  view or (inter, cache))
        if guided is not None:
            return guided
    if view is not None:
        return _optimize_lowered(inter, start, coef, loop, warm, cache, known, view)
    return _optimize(inter, start, coef, loop, warm, cache, known)


@dataclass(frozen=True)
class _Loop:
    """How ``optimize_alpha`` iterates (its arguments of the same names)."""

    iterations: int
    lr: float
    stop: Callable[[torch.Tensor], bool] | None
    sparse: bool


class _Start:
    """The alphas one optimisation starts from: ``params`` (leaf tensors, the values of
    column alphas where ``columns`` names their positions) and their dense and pass forms."""

    def __init__(self, inter: Intermediates, start: str, n_spec: int, cache: PassCache,
                 warm: dict | None, sparse: bool):
        self.inter, self.n_spec = inter, n_spec
        if sparse:
            alphas = column_alphas(inter, n_spec, cache, warm, before=start)
            structured = init_alphas(inter, n_spec, warm, before=start, structured=True)
            alphas = {**structured, **alphas}
        else:
            alphas = init_alphas(inter, n_spec, warm, before=start)
        self.columns = {k: v.index for k, v in alphas.items() if isinstance(v, ColumnAlpha)}
        self.params = {k: v.values if isinstance(v, ColumnAlpha) else v
                       for k, v in alphas.items()}

    def alphas(self, params: dict | None = None) -> dict:
        """The pass form of ``params`` (default: the leaves): ColumnAlpha where sparse."""
        params = self.params if params is None else params
        return {k: ColumnAlpha(self.columns[k], v) if k in self.columns else v
                for k, v in params.items()}

    def dense(self, found: dict) -> dict:
        return dense_alphas(self.inter, self.n_spec, found, self.columns)


def _default_lower(inter: Intermediates, start: str, coef, cache: PassCache) -> torch.Tensor:
    with torch.no_grad():
        return backward_bound(inter, start, coef, cache=cache).lower


def _search(inter: Intermediates, start: str, coef, s: _Start, loop: _Loop,
            cache: PassCache, best: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The loop of ``optimize_alpha`` from ``best`` (a sound bound of the default planes, or
    its cast): (best [B, S], the params that gave it per row)."""
    passes = _Passes(inter, start, coef, cache)
    best, found = maximize(lambda: passes.lower(s.alphas()),
                           step_groups(inter.graph, s.params, loop.lr),
                           Schedule(loop.iterations, stop=loop.stop), best)
    return best, {k: v for part in found for k, v in part.items()}


def _optimize(inter: Intermediates, start: str, coef, loop: _Loop, warm: dict | None,
              cache: PassCache, known: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
    """``optimize_alpha`` in ``inter``'s dtype."""
    s = _Start(inter, start, coef.shape[1], cache, warm, loop.sparse)
    if not s.params or loop.iterations <= 0:
        with torch.no_grad():
            fixed = s.alphas({k: v.detach() for k, v in s.params.items()})
            return (backward_bound(inter, start, coef, alphas=fixed, cache=cache).lower,
                    s.dense(s.params))
    # The rules' default relaxation (alpha=None) is a valid starting best: alpha's initial
    # point for smooth ops can be looser than it. (The whole pass: never looser than CROWN
    # by the last bit of the shortcut's sum in another order.)
    best = known if known is not None else _default_lower(inter, start, coef, cache)
    best, found = _search(inter, start, coef, s, loop, cache, best)
    return best, s.dense(found)


def _optimize_lowered(inter: Intermediates, start: str, coef, loop: _Loop, warm: dict | None,
                      cache: PassCache, known: torch.Tensor | None, view: tuple):
    """``optimize_alpha`` with its iterations on ``view`` (``inter`` and a cache in a work
    dtype: ``work_dtype.lowered_view``): the bound returned is max(default pass or ``known``,
    one pass in ``inter``'s dtype with the alphas found); no work-dtype number reaches it."""
    low, low_cache = view
    work_dtype = low.dtype
    s = _Start(low, start, coef.shape[1], low_cache, cast_alphas(warm, work_dtype),
               loop.sparse)
    if not s.params:
        return _optimize(inter, start, coef, loop, warm, cache, known)
    floor = known if known is not None else _default_lower(inter, start, coef, cache)
    seen, found = _search(low, start, cast_coef(coef, work_dtype), s, loop, low_cache,
                          floor.to(work_dtype))
    if bool((torch.isnan(seen) & torch.isfinite(floor)).any()):  # float32 lost the plot
        return _optimize(inter, start, coef, loop, warm, cache, floor)
    found = cast_alphas(found, inter.dtype)
    with torch.no_grad():
        lower = backward_bound(inter, start, coef, alphas=s.alphas(found), cache=cache).lower
    return torch.maximum(floor, lower), dense_alphas(inter, coef.shape[1], found, s.columns)


def _optimize_guided(inter: Intermediates, start: str, coef: torch.Tensor, loop: _Loop,
                     warm: dict | None, cache: PassCache, known: torch.Tensor | None,
                     work: tuple) -> tuple[torch.Tensor, dict] | None:
    """``optimize_alpha`` with its iterations on ``guide.chain_guide`` passes over ``work``
    (``inter`` and its cache, or their view in a work dtype); None where the graph has no
    guide. As with a work dtype, the bound returned is max(default pass or ``known``, one
    engine pass in ``inter``'s dtype with the alphas found)."""
    low, low_cache = work
    s = _Start(inter, start, coef.shape[1], cache, warm, loop.sparse)
    if not s.params:
        return None
    # (the default planes: the engine's, in the bounds' dtype, cast)
    work_coef = cast_coef(coef, low.dtype)
    guide = chain_guide(low, low_cache, start, work_coef,
                        {k: s.columns.get(k) for k in s.params}, planes=(inter, cache))
    if guide is None:
        return None
    dense = {k: v.detach().to(low.dtype, copy=True).requires_grad_(True)
             for k, v in s.dense(s.params).items()}
    if known is not None:
        start_best = known.to(low.dtype)
    else:  # the guide's default pass: where alpha's best beats it clearly, no engine one
        with torch.no_grad():
            start_best = guide.lower({})
    best, found = maximize(lambda: guide.lower(dense), step_groups(low.graph, dense, loop.lr),
                           Schedule(loop.iterations, stop=loop.stop), start_best)
    # (dense: positions without an alpha have no gradient and keep their initial value, so
    # this is dense_alphas of the columns)
    found = cast_alphas({k: v for part in found for k, v in part.items()}, inter.dtype)
    cols = {k: v.flatten(2)[:, :, s.columns[k]] if k in s.columns else v
            for k, v in found.items()}
    with torch.no_grad():
        lower = backward_bound(inter, start, coef, alphas=s.alphas(cols), cache=cache).lower
        floor = known if known is not None else _default_rows(
            inter, start, coef, cache, best.to(inter.dtype), start_best.to(inter.dtype))
    return torch.maximum(floor, lower), found


# The guide's bound may differ from the engine's by the work dtype's rounding: alpha's best is
# taken to beat the default relaxation only when the guide says so by this share of the
# bound's magnitude (plus as much absolute); other rows get the engine's default pass.
GUIDE_MARGIN = 1e-3


def _default_rows(inter: Intermediates, start: str, coef: torch.Tensor, cache: PassCache,
                  best: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """[B, S]: the engine's default pass at the spec rows where the guide's ``best`` fails to
    beat its ``default`` by GUIDE_MARGIN (in some domain), -inf at the others. Passes of
    MIN_WORK_ELEMENTS coefficients or more go over those rows alone (a sound bound, which
    can differ from the whole pass's in the last bits: the products' sums round otherwise);
    smaller ones over all rows (never looser than CROWN to the last bit; little to gain)."""
    need = ~(best > default + GUIDE_MARGIN * (1 + default.abs()))
    out = torch.full_like(best, -math.inf)
    if not bool(need.any()):
        return out
    rows = need.any(0).nonzero().flatten()
    if (rows.numel() == coef.shape[1]
            or coef.shape[0] * coef.shape[1] * largest_numel(inter.graph) < MIN_WORK_ELEMENTS):
        return _default_lower(inter, start, coef, cache)
    out[:, rows] = _default_lower(inter, start, coef.index_select(1, rows), cache)
    return out


class _Passes:
    """Bound passes of coef . value(start) under changing alphas. The start node's own step
    is the same in every pass (optimize_alpha gives alphas only to the nodes before it):
    where it has one dynamic input (not the graph's input), that step is taken once, here,
    and each pass starts from that input with the coefficients it left there, plus the
    constant it added (an intermediate bound's one-hot rows through its Linear: one matrix
    product per pass less)."""

    def __init__(self, inter: Intermediates, start: str, coef: torch.Tensor, cache: PassCache):
        self.inter, self.start, self.coef, self.cache = inter, start, coef, cache
        self.const = None
        try:
            node = inter.graph.node(start)
        except KeyError:  # (the start is the graph's input)
            return
        if len(node.dynamic_inputs) != 1:
            return
        value = node.dynamic_inputs[0]
        if value == inter.graph.inputs[0].name:
            return
        seen = {}

        def stop_here(a, interval) -> torch.Tensor:
            seen["coef"] = a
            # the pass took value's rounding allowance off before stopping here; the passes
            # from value take it off again (crown: |a| . delta, the same product)
            delta = inter.deltas.get(value)
            if delta is None or not isinstance(a, torch.Tensor):  # (windows: no shortcut)
                return torch.zeros(coef.shape[:2], device=inter.device, dtype=inter.dtype)
            b, s = a.shape[:2]
            return torch.bmm(a.abs().reshape(b, s, -1),
                             delta.expand(b, *delta.shape[1:]).reshape(b, -1, 1)).squeeze(-1)

        with torch.no_grad():
            const = backward_bound(inter, start, coef, concretize_at={value: stop_here},
                                   cache=cache).lower
        # (no coefficients: the start node concretised itself; window coefficients of a
        # convolutional value: their passes are the crown module's business)
        if isinstance(seen.get("coef"), torch.Tensor):
            self.start, self.coef, self.const = value, seen["coef"], const

    def lower(self, alphas: dict | None) -> torch.Tensor:
        """[B, S] lower bound of the pass with ``alphas`` (None: default relaxations)."""
        res = backward_bound(self.inter, self.start, self.coef, alphas=alphas,
                             cache=self.cache).lower
        return res if self.const is None else self.const + res


def step_groups(graph, params: dict, lr: float) -> list[Group]:
    """The alphas in two groups: tangent points (step ``lr`` x TANGENT_STEP_SHARE) and the
    others (step ``lr``), each projected onto its rule's range."""
    tangent = {k: v for k, v in params.items() if rules().get(graph.node(k).op).alpha
               is TANGENT_ALPHA}
    other = {k: v for k, v in params.items() if k not in tangent}
    return [Group(part, step, alpha_ranges(graph, part))
            for part, step in ((tangent, lr * TANGENT_STEP_SHARE), (other, lr)) if part]
