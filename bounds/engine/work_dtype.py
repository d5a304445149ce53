"""Optimisation in a lower working precision, reported bounds in the bounds' own.

alpha-CROWN's and beta-CROWN's iterations only choose parameters: every alpha in its rule's
range (every beta >= 0) gives a sound bound, so the loop may run in float32 (about twice as
fast on CPU) on a float32 copy of the intermediate bounds. What it returns is a guide, never a
bound: rounding the bounds to float32 can move them inward, and float32 passes round. The
bound reported is one pass in the bounds' own dtype (float64, with the rounding allowances of
``rounding.py`` and ``final_margin``) with the parameters found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bounds.engine.batch_rows import cast_rows
from bounds.engine.deadline import checked
from bounds.engine.patches import Patches
from bounds.engine.results import ColumnAlpha, Intermediates, PassCache
from bounds.types import Interval

# The default working dtype of alpha-CROWN's iterations on float64 bounds.
WORK_DTYPE = torch.float32


# Passes whose coefficients hold fewer elements (domains x spec rows x the widest value) keep
# the bounds' own dtype: their cost is per-operation overhead, not arithmetic, and float32
# gains nothing (ERAN sigmoid 6x200, 9 spec rows, 1,800 elements: 0.35-0.41 vs 0.39-0.43 CPU
# s per alpha pass; its intermediate rows, 80,000: 1.11-1.22 vs 1.32-1.47 s; TinyYOLO, 6.9M:
# 1.39 vs 2.31-2.73 s), and small nets keep float64's exact trajectories.
MIN_WORK_ELEMENTS = 1 << 15
# ... unless their products are large: rows x the largest weight (multiply-adds of one product
# per pass) from this many. Few rows through wide matrices spend the pass in the products,
# where float32 halves the time (a 9 x 200 by 200 x 784 product: 106 vs 50 us). Side by side,
# 5 passes each, one thread, bound_spec alpha (min CPU ms, float64 -> float32 loop): ERAN
# sigmoid 6x200 idx 7167 138 -> 113, idx 56 125 -> 114; mnistfc 256x4 prop_0 94 -> 81, 256x6
# 161 -> 139; the bounds moved by under 3e-3 either way (the loop's trajectory: 7167 -17.6323
# -> -17.6332, 256x6 -1605.409 -> -1605.381). ACAS Xu (5 rows x 2,500) gains nothing: below.
MIN_PRODUCT_WORK = 1 << 17


def lowers(inter: Intermediates, work_dtype: torch.dtype | None, rows: int = 0,
           width: int = 0, weight: int = 0) -> bool:
    """Whether a loop over ``inter`` should run in ``work_dtype``: a floating dtype narrower
    than the bounds' own (None, or the same dtype: no), for ``rows`` coefficient rows (all
    domains) of ``width`` elements at least MIN_WORK_ELEMENTS in all, or multiplied by a
    constant of ``weight`` elements at least MIN_PRODUCT_WORK times."""
    return (work_dtype is not None and work_dtype.is_floating_point
            and work_dtype.itemsize < inter.dtype.itemsize
            and (rows * width >= MIN_WORK_ELEMENTS or rows * weight >= MIN_PRODUCT_WORK))


# Bounds of larger magnitude keep the loop in the bounds' own dtype: products with slopes and
# coefficients (and Exp's planes) would overflow float32 (max 3.4e38) on the way.
LARGEST_WORK_BOUND = 2.0**64


def fits(interval: Interval, dtype: torch.dtype) -> bool:
    """Whether every finite bound of ``interval`` stays below LARGEST_WORK_BOUND and the
    range of ``dtype``: a value that would overflow there (an Exp of a wide interval) would
    make the work passes' planes infinite and their guide worthless."""
    limit = min(LARGEST_WORK_BOUND, torch.finfo(dtype).max)
    for t in (interval.lower, interval.upper):
        if bool(((t.abs() > limit) & torch.isfinite(t)).any()):
            return False
    return True


def cast_intermediates(inter: Intermediates, dtype: torch.dtype,
                       allowances: bool = True) -> Intermediates:
    """``inter`` with its box, bounds and (unless ``allowances`` is False) rounding allowances
    in ``dtype`` (for a pass whose result is only a guide: rounding to ``dtype`` can move a
    bound inward)."""
    def cast(t):
        return None if t is None else cast_rows(t, dtype)

    deltas = {k: cast(d) for k, d in inter.deltas.items()} if allowances else {}
    return Intermediates(
        inter.graph, Interval(cast(inter.box.lower), cast(inter.box.upper)),
        {k: Interval(cast(v.lower), cast(v.upper)) for k, v in checked(inter.bounds.items())},
        deltas, inter.infeasible)


@dataclass
class _View:
    """``inter`` (its bounds dict ``owner``) in a work dtype: the cast of each value's interval
    (``source``: the interval it was cast from), with the work passes' own cache."""

    owner: object
    box: Interval
    fits: bool = True
    source: dict = field(default_factory=dict)
    inter: Intermediates | None = None
    cache: PassCache = field(default_factory=PassCache)


def lowered_view(inter: Intermediates, cache: PassCache, dtype: torch.dtype
                 ) -> tuple[Intermediates, PassCache] | None:
    """``cast_intermediates(inter, dtype)`` without rounding allowances (alpha-CROWN's loop
    picks alphas; the float64 pass that reports the bound takes the allowances off: TinyYOLO,
    whose every weighted node paid an |a|, a product and their gradients per iteration, 0.72
    -> 0.64 CPU s a pass, bound -46651.94 -> -46652.00 of -46654.61 at the issue's start. The
    branch-and-bound loops keep them: they steer by their work bounds, see
    ``tests/bounds/test_alpha_work_dtype``) and a cache for passes over it, both kept in
    ``cache`` across calls: the bound engines fill ``inter.bounds`` in place value by value
    (intermediate alpha refines value after value), so only intervals new since the last call
    are cast, and the work passes keep the default planes of the values before them.
    None: some bound is too large for ``dtype`` (LARGEST_WORK_BOUND)."""
    view = cache.work.get(dtype)
    if view is None or view.owner is not inter.bounds or view.box is not inter.box:
        view = _View(inter.bounds, inter.box)
        cache.work[dtype] = view
        view.inter = cast_intermediates(inter, dtype, allowances=False)
        view.source = dict(inter.bounds)
        view.fits = all(fits(v, dtype) for v in inter.bounds.values())
        return (view.inter, view.cache) if view.fits else None
    low = view.inter
    memo = view.cache.relaxations(low.bounds)
    for name, interval in inter.bounds.items():
        if view.source.get(name) is interval:
            continue
        view.source[name] = interval
        view.fits = view.fits and fits(interval, dtype)
        low.bounds[name] = Interval(cast_rows(interval.lower, dtype),
                                    cast_rows(interval.upper, dtype))
        for node in inter.graph.consumers(name):  # planes made from the old interval
            memo.pop(node.name, None)
    return (low, view.cache) if view.fits else None


def cast_coef(coef: torch.Tensor | Patches, dtype: torch.dtype) -> torch.Tensor | Patches:
    """Start coefficients (dense or window) in ``dtype``."""
    if isinstance(coef, Patches):
        return coef.with_values(coef.values.to(dtype))
    return coef.to(dtype)


def cast_alphas(alphas: dict | None, dtype: torch.dtype) -> dict | None:
    """Alphas (dense or ``ColumnAlpha``) in ``dtype``, detached (None stays None)."""
    if alphas is None:
        return None
    out = {}
    for k, v in alphas.items():
        if isinstance(v, ColumnAlpha):
            out[k] = ColumnAlpha(v.index, v.values.detach().to(dtype))
        else:
            out[k] = v.detach().to(dtype)
    return out
