"""Piecewise-linear and step activations: LeakyRelu, Abs, Clip, Sign, Floor, Round.

LeakyRelu(a) = max(x, a x) for a <= 1 (convex; min(x, a x), concave, for a > 1); Abs is the
a = -1 case. Clip(min, max) has kinks at min and max. For these, f(x) - s x is piecewise linear,
so its extremes over [l, u] lie at l, u or a kink: offsets are exact for every slope (see
``bounds.rules.tangents``), hence sound. Slopes: the chord on the convex side's upper plane
(concave side's lower plane), and on the kink side a slope between the two piece slopes
(Relu-style); with both Clip kinks inside, two chord-parallel planes.
alpha (optional, in [0, 1]): the kink-side slope, s = a + alpha (1 - a) for LeakyRelu, 2 alpha - 1
for Abs, alpha itself for Clip (both planes when both kinks lie inside [l, u]).
Sign, Floor and Round are steps. Sign across 0 takes planes through (0, 1) above and (0, -1)
below, with slopes between 0 and the steepest sound ones (2 / |l| and 2 / u), alpha their share
(the step's relaxation of binarised nets; constant planes sign(l), sign(u) where stable);
Floor uses x - 1 < floor(x) <= x with exact offsets when u - l >= 1, else the constant planes
floor(l), floor(u); Round (half to even, as ONNX) likewise with x - 1/2 <= round(x) <= x + 1/2
(equality at the ties). No alpha for Floor and Round.
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Alpha, Kinks, Milp, OpRule, OpTraits, Rounding, Split
from bounds.rules.common import KINK_ALPHA
from bounds.rules.straight_through import straight_through
from bounds.rules.tangents import (
    F64,
    Curve,
    chord_slope,
    clean_slope,
    finish_planes,
    ibp_curve,
    margin,
)
from bounds.types import Interval, Relaxation


def _leaky_curve(a: float) -> Curve:
    return Curve(
        f"LeakyRelu({a:g})",
        lambda x: torch.where(x >= 0, x, a * x),
        lambda x: torch.where(x >= 0, torch.ones_like(x), torch.full_like(x, a)),
        lambda s, l, u: [torch.zeros_like(l)],
        lambda l, u: torch.full_like(l, 1.0 if a <= 1 else -1.0),
    )


def _leaky_relax(op: str, a: float, lower, upper, alpha) -> Relaxation:
    curve = _leaky_curve(a)
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    chord = chord_slope(curve, l, u)
    if alpha is None:
        kink = torch.where(u > -l, torch.ones_like(l), torch.full_like(l, a))
    else:
        kink = a + alpha.to(F64).clamp(0, 1) * (1 - a)
    stable = (l >= 0) | (u <= 0)
    kink = torch.where(stable, chord, kink)
    s_lo, s_up = (kink, chord) if a <= 1 else (chord, kink)
    return finish_planes(curve, op, s_lo, s_up, l, u, lower.dtype)


def _leaky_alpha(attrs) -> float:
    return float(attrs.get("alpha", 0.01))


def _clip_bounds(attrs) -> tuple[float, float]:
    lo, hi = attrs.get("min"), attrs.get("max")
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    return lo, hi


def _clip_curve(lo: float, hi: float) -> Curve:
    def df(x):
        return ((x >= lo) & (x <= hi)).to(x.dtype)

    kinks = [v for v in (lo, hi) if math.isfinite(v)]
    return Curve(
        "Clip",
        lambda x: x.clamp(lo, hi),
        df,
        lambda s, l, u: [torch.full_like(l, v) for v in kinks],
        lambda l, u: torch.zeros_like(l),
    )


def _clip_slopes(lo: float, hi: float, l: torch.Tensor, u: torch.Tensor):
    """(chord, lower-kink slope, upper-kink slope, kink masks) of Clip without alpha: on a
    kink's side the Relu-style choice of the steeper-gaining piece."""
    chord = chord_slope(_clip_curve(lo, hi), l, u)
    cross_lo, cross_hi = (l < lo) & (u > lo), (l < hi) & (u > hi)
    return chord, (u - lo > lo - l).to(F64), (hi - l > u - hi).to(F64), cross_lo, cross_hi


def _clip_alpha_init(lower, upper, attrs=None) -> torch.Tensor:
    """The alpha whose planes are those of ``_clip_relax`` without alpha: the kink side's
    slope where one kink lies inside, the chord where both do (or none: alpha unused)."""
    lo, hi = _clip_bounds(attrs or {})
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    chord, kink_lo, kink_hi, cross_lo, cross_hi = _clip_slopes(lo, hi, l, u)
    start = torch.where(cross_lo & ~cross_hi, kink_lo,
                        torch.where(cross_hi & ~cross_lo, kink_hi, chord))
    return start.clamp(0, 1).to(lower.dtype)


def _clip_relax(node, lower, upper, alpha=None) -> Relaxation:
    lo, hi = _clip_bounds(node.attrs)
    curve = _clip_curve(lo, hi)
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    chord, kink_lo, kink_hi, cross_lo, cross_hi = _clip_slopes(lo, hi, l, u)
    if alpha is None:
        both_lo = both_hi = chord
    else:
        kink_lo = kink_hi = both_lo = both_hi = alpha.to(F64).clamp(0, 1)
    only_lo, only_hi, both = cross_lo & ~cross_hi, cross_hi & ~cross_lo, cross_lo & cross_hi
    s_lo = torch.where(only_lo, kink_lo, torch.where(both, both_lo, chord))
    s_up = torch.where(only_hi, kink_hi, torch.where(both, both_hi, chord))
    return finish_planes(curve, "Clip", s_lo, s_up, l, u, lower.dtype)


def _constant_planes(lo_val, up_val, dtype) -> Relaxation:
    zero = torch.zeros_like(lo_val, dtype=dtype)
    return Relaxation(zero, lo_val.to(dtype), zero, up_val.to(dtype))


def _sign_steepest(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The steepest sound slopes of Sign's (upper, lower) planes on [l, u] through (0, 1) and
    (0, -1) (across 0: 2 / |l|, 2 / u; from 0: the planes through the origin, 1 / |l| where u
    = 0 and 1 / u where l = 0; 0 on the stable sides)."""
    zero = torch.zeros_like(l)
    up = torch.where((l < 0) & (u > 0), 2 / -l, torch.where((l < 0) & (u == 0), 1 / -l, zero))
    lo = torch.where((l < 0) & (u > 0), 2 / u, torch.where((l == 0) & (u > 0), 1 / u, zero))
    return up, lo


def _sign_alpha_init(lower, upper, attrs=None) -> torch.Tensor:
    """The alpha of ``_sign_relax``'s default planes: 1 (the steep upper plane, the flat lower
    one) where |l| > u, else 0."""
    return (-lower.detach() > upper.detach()).to(lower.dtype)


def _sign_relax(node, lower, upper, alpha=None) -> Relaxation:
    """Planes of sign(x) (-1, 0 at 0, 1) with slopes s_u = alpha S_u, s_l = (1 - alpha) S_l
    (``_sign_steepest``; default: the steep plane on the longer side, whose area between
    plane and step is smaller), and exact offsets for them over the three pieces: for s >= 0,
    sup (f - s x) = max(-1 - s l [l < 0], 0 [0 in [l, u]], 1 - s max(l, 0) [u > 0]) and
    inf (f - s x) = min(-1 - s min(u, 0) [l < 0], 0, 1 - s u [u > 0]). Stable intervals keep
    the constant planes sign(l) = sign(u)."""
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    steep_up, steep_lo = _sign_steepest(l, u)
    share = _sign_alpha_init(l, u) if alpha is None else alpha.to(F64).clamp(0, 1)
    s_up, s_lo = clean_slope(share * steep_up, lower.dtype), clean_slope(
        (1 - share) * steep_lo, lower.dtype)
    neg, pos, zero = l < 0, u > 0, (l <= 0) & (u >= 0)
    inf = torch.full_like(s_up, math.inf)
    up_off = torch.maximum(torch.where(neg, -1 - s_up * l, -inf),
                           torch.maximum(torch.where(zero, 0.0, -inf),
                                         torch.where(pos, 1 - s_up * l.clamp(min=0), -inf)))
    lo_off = torch.minimum(torch.where(neg, -1 - s_lo * u.clamp(max=0), inf),
                           torch.minimum(torch.where(zero, 0.0, inf),
                                         torch.where(pos, 1 - s_lo * u, inf)))
    mag = torch.maximum(l.abs(), u.abs())
    up_off = up_off + margin(up_off, s_up, mag, lower.dtype)
    lo_off = lo_off - margin(lo_off, s_lo, mag, lower.dtype)
    return Relaxation(*(t.to(lower.dtype) for t in (s_lo, lo_off, s_up, up_off)))


def _floor_relax(node, lower, upper, alpha=None) -> Relaxation:
    # slope-1 planes: sup of floor(x) - x is 0 at an integer in (l, u] else floor(l) - l;
    # its inf is -1 (approached just left of an integer in (l, u]) else floor(l) - u.
    return _step_relax(torch.floor, 0.0, -1.0, lower, upper)


def _round_relax(node, lower, upper, alpha=None) -> Relaxation:
    # round(x) - x lies in [-1/2, 1/2], both ends reached at (or next to) a tie in [l, u]
    return _step_relax(torch.round, 0.5, -0.5, lower, upper)


def _step_relax(step, sup_gap: float, inf_gap: float, lower, upper) -> Relaxation:
    """Planes of a nondecreasing integer step with step(x) - x in [inf_gap, sup_gap]: slope 1
    with those offsets where [l, u] is at least 1 wide and holds a step (else the exact
    offsets of its one level), the constant planes step(l), step(u) on narrower intervals."""
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    fl, fu = step(l), step(u)
    steps = fu > fl
    up_off = torch.where(steps, torch.full_like(l, sup_gap), fl - l)
    lo_off = torch.where(steps, torch.full_like(l, inf_gap), fl - u)
    one = torch.ones_like(l)
    mag = torch.maximum(l.abs(), u.abs())
    lo_off = lo_off - margin(lo_off, one, mag, lower.dtype)
    up_off = up_off + margin(up_off, one, mag, lower.dtype)
    wide = (u - l) >= 1
    zero = torch.zeros_like(l)
    out = (torch.where(wide, one, zero), torch.where(wide, lo_off, fl),
           torch.where(wide, one, zero), torch.where(wide, up_off, fu))
    return Relaxation(*(t.to(lower.dtype) for t in out))


def _monotone_ibp(fn):
    def ibp(node, args):
        return Interval(fn(args[0].lower), fn(args[0].upper))

    return ibp


def _leaky_forward(node, args):
    return torch.nn.functional.leaky_relu(args[0], _leaky_alpha(node.attrs))


def _leaky_ibp(node, args):
    return ibp_curve(_leaky_curve(_leaky_alpha(node.attrs)), "LeakyRelu", args[0])


def _clip_forward(node, args):
    lo, hi = _clip_bounds(node.attrs)
    return args[0].clamp(None if lo == -math.inf else lo, None if hi == math.inf else hi)


def _clip_ibp(node, args):
    return Interval(_clip_forward(node, [args[0].lower]), _clip_forward(node, [args[0].upper]))


def _leaky_kinks(attrs) -> Kinks:
    a = _leaky_alpha(attrs)  # max(x, a x) = a x + (1 - a) relu(x), min(...) likewise for a > 1
    return Kinks(0.0, a, ((1.0 - a, 0.0),))


def _abs_kinks(attrs) -> Kinks:
    return Kinks(0.0, -1.0, ((2.0, 0.0),))


def _clip_kinks(attrs) -> Kinks:
    """clamp(x, lo, hi) = lo + relu(x - lo) - relu(x - hi); an infinite side drops its Relu
    (and its constant); lo > hi gives hi everywhere (ONNX)."""
    lo, hi = _clip_bounds(attrs)
    if lo > hi:
        return Kinks(hi, 0.0, ())
    terms = ((1.0, lo),) if math.isfinite(lo) else ()
    if math.isfinite(hi):
        terms = (*terms, (-1.0, hi))
    return Kinks(lo if math.isfinite(lo) else 0.0, 0.0 if math.isfinite(lo) else 1.0, terms)


_PWL = {"elementwise": True, "piecewise_linear": True}
_STEP = {"rounding": Rounding.EXACT, "milp": Milp("relaxed")}
RULES = (
    OpRule("LeakyRelu", forward=_leaky_forward, ibp=_leaky_ibp,
           relax=lambda node, lower, upper, alpha=None: _leaky_relax(
               "LeakyRelu", _leaky_alpha(node.attrs), lower, upper, alpha),
           traits=OpTraits(**_PWL), doc="max(x, a x); Relu-style planes, alpha = slope",
           alpha=KINK_ALPHA, rounding=Rounding.ARITHMETIC, split=Split("zero", "sign"),
           milp=Milp("kinks", _leaky_kinks, zero_kink=True)),
    OpRule("Abs", forward=lambda node, args: args[0].abs(), ibp=lambda node, args: ibp_curve(
               _leaky_curve(-1.0), "Abs", args[0]),
           relax=lambda node, lower, upper, alpha=None: _leaky_relax(
               "Abs", -1.0, lower, upper, alpha),
           traits=OpTraits(convex=True, **_PWL), doc="|x|; chord above, slope 2 alpha - 1 below",
           alpha=KINK_ALPHA, rounding=Rounding.EXACT, split=Split("zero", "sign"),
           milp=Milp("kinks", _abs_kinks, zero_kink=True)),
    OpRule("Clip", forward=_clip_forward, ibp=_clip_ibp, relax=_clip_relax,
           traits=OpTraits(monotone=True, **_PWL), doc="clamp(x, min, max); two kinks",
           alpha=Alpha(_clip_alpha_init), rounding=Rounding.EXACT,
           split=Split("kinks", "interval"),
           milp=Milp("kinks", _clip_kinks)),
    OpRule("Sign", forward=lambda node, args: torch.sign(args[0]), ibp=_monotone_ibp(torch.sign),
           relax=_sign_relax, traits=OpTraits(monotone=True, elementwise=True),
           doc="sign(x); planes through (0, 1) and (0, -1), alpha = their slopes' share",
           split=Split("zero", "none"), surrogate=straight_through(torch.sign),
           alpha=Alpha(_sign_alpha_init), **_STEP),
    OpRule("Floor", forward=lambda node, args: torch.floor(args[0]),
           ibp=_monotone_ibp(torch.floor), relax=_floor_relax,
           traits=OpTraits(monotone=True, elementwise=True),
           doc="floor(x); x - 1 < floor(x) <= x planes or constants", split=None,
           surrogate=straight_through(torch.floor), alpha=None, **_STEP),
    OpRule("Round", forward=lambda node, args: torch.round(args[0]),
           ibp=_monotone_ibp(torch.round), relax=_round_relax,
           traits=OpTraits(monotone=True, elementwise=True),
           doc="round half to even; x - 1/2 <= round(x) <= x + 1/2 planes or constants",
           split=None, surrogate=straight_through(torch.round), alpha=None, **_STEP),
)
