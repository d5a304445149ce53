"""Relu: y = max(x, 0).

IBP: monotone. Relaxation on [l, u] with l < 0 < u: upper plane s x + b with the chord's slope
s = u / (u - l), lower line alpha * x with any alpha in [0, 1] (it lies below max(x, 0)).
Stable neurons are exact: identity when l >= 0, zero when u <= 0.

Upper offset, sound in every dtype. For ANY slope s in [0, 1], relu(x) - s x is convex and
piecewise linear, so its maximum over [l, u] is at an end: b* = max(-s l, (1 - s) u) makes
s x + b* >= relu(x) on [l, u]. The slope is the one returned (computed and rounded in the
engine's dtype, so it may differ from the exact chord: no matter). We compute c = max(-(s l),
(1 - s) u) in the dtype (unit roundoff e = eps / 2, smallest normal T): each of s l, 1 - s and
(1 - s) u is one rounding, so c >= b* (1 - e)^2 - h, with h the absolute error of an underflow
(at most half the smallest subnormal), and the offset returned, (c (1 + 8e)) + T in the dtype,
is >= (c (1 + 8e) (1 - e) - h + T)(1 - e) >= b* (1 + 8e)(1 - e)^4 + T / 2 - 3h > b*. (Before,
b = -l s was computed in the dtype unlifted: in float32 the plane came out below 0 at x = l by
~1e-9; a float64 detour lifting by 2^-50 was sound too but cost three times as much.) The lift
costs a relative 8e plus T.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from bounds.registry import Kinks, Milp, OpRule, OpTraits, Rounding, Split
from bounds.rules.common import KINK_ALPHA
from bounds.types import Interval, Relaxation


def _forward(node, args):
    return torch.relu(args[0])


def _ibp(node, args):
    return Interval(torch.relu(args[0].lower), torch.relu(args[0].upper))


def _upper_offset(slope: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """max(-s l, (1 - s) u) in the slope's dtype, lifted to lie above its exact value (see the
    module docstring)."""
    info = torch.finfo(slope.dtype)
    lift = 1 + 4 * info.eps  # 1 + 8e (eps = 2e): exact in the dtype
    return torch.maximum(-(slope * lower), (1 - slope) * upper) * lift + info.tiny


def _upper_plane(lower, upper) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unstable mask, slope, offset) of the upper plane: the chord, its offset rounded up."""
    active = lower >= 0
    unstable = ~(active | (upper <= 0))
    denom = torch.where(unstable, upper - lower, torch.ones_like(upper))
    up_slope = torch.where(unstable, upper / denom, active.to(upper.dtype))
    # stable entries (possibly infinite) stay out of the offset's arithmetic and its gradient
    safe_l = torch.where(unstable, lower, -torch.ones_like(lower))
    safe_u = torch.where(unstable, upper, torch.ones_like(upper))
    up_offset = torch.where(unstable, _upper_offset(up_slope, safe_l, safe_u),
                            torch.zeros_like(upper))
    return unstable, up_slope, up_offset


# The upper plane depends on the bounds only, while alpha-CROWN relaxes the same bounds with new
# alphas at every iteration (the rounded-up offset was 4.7 s of a 20.9 s ReLU branch-and-bound
# profile on oval21): the last planes per bound tensor, keyed by the tensors the bounds are
# views of (weakly: an entry goes with them) and checked against the views' layout and the
# tensors' version counters, so bounds changed in place or other views recompute.
_PLANES = WeakTensorKeyDictionary()


def _view_key(t: torch.Tensor) -> tuple:
    return (t.shape, t.stride(), t.storage_offset(), t.dtype, t.device, t._version)


def _plane_key(lower, upper):
    base_l = lower if lower._base is None else lower._base
    base_u = upper if upper._base is None else upper._base
    return base_l, base_u, (_view_key(lower), _view_key(upper), _view_key(base_l),
                            _view_key(base_u))


def _cached_planes(lower, upper):
    """The planes cached for exactly these bound views (None: none, or stale)."""
    base_l, base_u, key = _plane_key(lower, upper)
    entry = _PLANES.get(base_l)
    if entry is not None and entry[0]() is base_u and entry[1] == key:
        return entry[2]
    return None


def _store(lower, upper, planes) -> None:
    base_l, base_u, key = _plane_key(lower, upper)
    try:
        _PLANES[base_l] = (weakref.ref(base_u), key, planes)
    except TypeError:
        pass


def upper_plane(lower, upper) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unstable mask, slope, offset) of the upper planes on [lower, upper] (the chord, its
    offset rounded up; slope 1 / 0 and offset 0 on active / inactive neurons): the planes
    ``relu_relax`` returns, for passes that apply them themselves
    (``verifier.bab.chain_guide``)."""
    return _upper_plane(lower, upper)


def _cached_upper_plane(lower, upper):
    if lower.requires_grad or upper.requires_grad:
        return _upper_plane(lower, upper)
    planes = _cached_planes(lower, upper)
    if planes is None:
        planes = _upper_plane(lower, upper)
        _store(lower, upper, planes)
    return planes


def carry_planes(old: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor],
                 rows: torch.Tensor) -> bool:
    """Bounds ``new`` = ``old``[rows] (the same views, (lower, upper) as ``relax`` gets them,
    of rows of a batch): their planes cached as the rows of ``old``'s, when those are cached
    (the planes are elementwise in the bounds: the same as computed afresh). A loop that
    drops domains from its batch keeps its planes so (``verifier.bab.pair_loop``). Returns
    whether planes were carried."""
    if any(t.requires_grad for t in (*old, *new)):
        return False
    planes = _cached_planes(*old)
    if planes is None or any(p.shape[0] != rows.shape[0] for p in planes):
        return False
    _store(*new, tuple(t[rows] for t in planes))
    return True


def relu_relax(node, lower, upper, alpha=None):
    active = lower >= 0
    unstable, up_slope, up_offset = _cached_upper_plane(lower, upper)
    if alpha is None:
        # CROWN's adaptive choice: slope 1 when the positive part dominates, else 0.
        alpha = (upper > -lower).to(upper.dtype)
    low_slope = torch.where(unstable, alpha, active.to(upper.dtype))
    return Relaxation(low_slope, torch.zeros_like(upper), up_slope, up_offset)


def relu_alpha_planes(lower, upper):
    """``OpRule.alpha_planes`` of Relu: the planes ``relu_relax`` gives for any alpha."""
    unstable, up_slope, up_offset = _cached_upper_plane(lower, upper)
    return (lower >= 0).to(upper.dtype), unstable.to(upper.dtype), up_slope, up_offset


def _kinks(attrs) -> Kinks:
    return Kinks(0.0, 0.0, ((1.0, 0.0),))


RULES = (
    OpRule(
        "Relu",
        forward=_forward,
        ibp=_ibp,
        relax=relu_relax,
        traits=OpTraits(monotone=True, elementwise=True, piecewise_linear=True, convex=True),
        doc="max(x, 0)",
        alpha=KINK_ALPHA,
        alpha_planes=relu_alpha_planes,
        rounding=Rounding.EXACT,
        split=Split("zero", "sign"),
        milp=Milp("kinks", _kinks, zero_kink=True),
    ),
)
