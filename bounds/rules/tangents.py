"""Shared relaxation math for the smooth elementwise ops (S-shaped, periodic, GELU, exp/log/pow).

The core idea: for ANY slope ``s`` the tightest sound offsets of the planes ``s x + b`` on [l, u]
are ``min``/``max`` over [l, u] of ``g(x) = f(x) - s x``, and those extremes lie at l, u or at a
critical point where ``f'(x) = s``. Each op describes its function as a :class:`Curve` whose
``crit(s, l, u)`` returns a *superset* of the critical points in [l, u] (extra points, NaN or
infinite entries are harmless: they are clamped into [l, u], and evaluating g at more points of
[l, u] can only pick values that are attained). So every plane we emit touches the curve and is
sound whatever slope we chose; slope choice (chord, tangent, tangent-from-an-endpoint, alpha)
only affects tightness. IBP is the same computation with ``s = 0``.

Floating point: everything is computed in float64 whatever the engine dtype; slopes are first
rounded to the engine dtype so the offsets are exact for the slopes actually returned, then the
offsets are pushed outward by ``MARGIN_ULPS * eps(dtype) * (|b| + |s| max(|l|, |u|))``, which
covers float64 libm errors (a few ulps), the rounding of ``f(x) - s x`` and the final cast.

Domains: an interval that leaves an op's domain (Log of x <= 0, Sqrt of x < 0, Reciprocal across
0, ...) has no finite sound bound, so ``ibp`` and ``relax`` raise :class:`DomainError` (a
``ValueError``) naming the op and the first offending interval; a relaxation that overflows
(Exp of a huge input) raises it too. Engines may catch it and report the domain as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bounds.rules.common import broadcast_shape
from bounds.types import Interval, Relaxation

MARGIN_ULPS = 8.0
F64 = torch.float64


class DomainError(ValueError):
    """An input interval leaves the op's domain, or its bounds overflow the float range."""


@dataclass(frozen=True)
class Curve:
    """A smooth elementwise function, described for relaxation (all callables take float64).

    ``f``/``df``: value and derivative. ``crit(s, l, u)``: list of tensors containing every x in
    [l, u] with f'(x) = s (supersets allowed), or a :class:`Critical` (approximate points with
    a bound on the error that makes in g). ``curvature(l, u)``: +1 where f is convex on the
    whole [l, u], -1 where concave, 0 otherwise. ``crossing(l, u)``: optional default slopes
    (lower, upper) where curvature is 0; the parallel-chord pair is used when absent.
    ``in_domain(l, u)``: bool mask of intervals inside the domain. ``increasing``: f is
    nondecreasing on its whole domain (IBP is then [f(l), f(u)]).
    """

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    df: Callable[[torch.Tensor], torch.Tensor]
    crit: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list]
    curvature: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    crossing: Callable | None = None
    in_domain: Callable | None = None
    domain_text: str = ""
    increasing: bool = False


@dataclass(frozen=True)
class Critical:
    """What a ``crit`` may return instead of a list: approximate critical points and ``slack``
    (broadcastable to the intervals), a bound on how far g = f - s x at each point may fall
    short of (max) or exceed (min) g at the true critical point it stands for; ``extreme``
    widens its result by it."""

    points: list
    slack: torch.Tensor


def check_domain(op: str, lower: torch.Tensor, upper: torch.Tensor, ok: torch.Tensor,
                 what: str) -> None:
    """Raise DomainError naming the op and the first interval where ``ok`` is false."""
    bad = ~ok
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        lo = torch.broadcast_to(lower, bad.shape)[idx].item()
        hi = torch.broadcast_to(upper, bad.shape)[idx].item()
        raise DomainError(f"{op}: input interval [{lo!r}, {hi!r}] at index {idx} leaves the "
                          f"domain ({what}); no finite sound bound exists")


def clamp_into(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Clamp candidates into [lower, upper]; NaN becomes lower (a harmless extra candidate)."""
    x = torch.where(torch.isnan(x), lower, x)
    return torch.minimum(torch.maximum(x, lower), upper)


def extreme(curve: Curve, s: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
            largest: bool) -> torch.Tensor:
    """max (or min) over [lower, upper] of f(x) - s x, from endpoints and critical points.

    Candidates are detached: by the envelope theorem the gradient in s is -x* anyway.
    """
    with torch.no_grad():
        found = curve.crit(s, lower, upper)
        points, slack = (found.points, found.slack) if isinstance(found, Critical) else (
            found, None)
        cands = [lower, upper] + [clamp_into(c, lower, upper) for c in points]
        shape = broadcast_shape(s.shape, lower.shape, upper.shape)
        cands = torch.stack([torch.broadcast_to(c, shape) for c in cands])
    slope_term = s.unsqueeze(0) * cands
    # a zero slope at an infinite end (e.g. Reciprocal on [1, inf]) contributes 0, not NaN
    slope_term = torch.where(s.unsqueeze(0) == 0, torch.zeros_like(slope_term), slope_term)
    vals = curve.f(cands) - slope_term
    if slack is None:
        return vals.amax(0) if largest else vals.amin(0)
    return vals.amax(0) + slack if largest else vals.amin(0) - slack


def margin(offset: torch.Tensor, slope: torch.Tensor, mag: torch.Tensor,
           dtype: torch.dtype) -> torch.Tensor:
    """Outward safety margin for an offset (see module docstring)."""
    eps = torch.finfo(dtype).eps
    return (MARGIN_ULPS * eps) * (offset.abs() + slope.abs() * mag).detach()


def clean_slope(s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Finite slope representable in ``dtype`` (non-finite -> 0), returned in float64.

    Any slope is sound because offsets are computed for the slope actually returned.
    """
    big = torch.finfo(dtype).max * 1e-8
    s = torch.where(torch.isfinite(s), s, torch.zeros_like(s)).clamp(-big, big)
    return s.to(dtype).to(F64)


def finish_planes(curve: Curve, op: str, s_lo, s_up, l, u, dtype) -> Relaxation:
    """Exact offsets for the given slopes, margins, overflow check, cast to ``dtype``."""
    s_lo, s_up = clean_slope(s_lo, dtype), clean_slope(s_up, dtype)
    mag = torch.maximum(l.abs(), u.abs())
    lo_off = extreme(curve, s_lo, l, u, largest=False)
    up_off = extreme(curve, s_up, l, u, largest=True)
    lo_off = lo_off - margin(lo_off, s_lo, mag, dtype)
    up_off = up_off + margin(up_off, s_up, mag, dtype)
    out = [t.to(dtype) for t in (s_lo, lo_off, s_up, up_off)]
    fin = torch.isfinite(out[1]) & torch.isfinite(out[3])
    check_domain(op, l, u, fin, "relaxation overflows the float range")
    return Relaxation(*out)


def bisect(fn: Callable, target: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
           increasing: bool, iters: int = 60) -> torch.Tensor:
    """Root of fn(x) = target on [a, b] for monotone fn (converges to an end if none)."""
    with torch.no_grad():
        shape = broadcast_shape(target.shape, a.shape, b.shape)
        a, b = torch.broadcast_to(a, shape).clone(), torch.broadcast_to(b, shape).clone()
        for _ in range(iters):
            m = (a + b) / 2
            v = fn(m)
            right = (v < target) if increasing else (v > target)
            a, b = torch.where(right, m, a), torch.where(right, b, m)
        return (a + b) / 2


def _unit(alpha, l, u):
    """Tangent point l + alpha (u - l) for alpha in [0, 1] (clamped); midpoint when None."""
    if alpha is None:
        return (l + u) / 2
    a = alpha.to(F64).clamp(0.0, 1.0)
    return l + a * (u - l)


def chord_slope(curve: Curve, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(f(u) - f(l)) / (u - l); the derivative at the midpoint when the width is tiny."""
    width = u - l
    tiny = width <= 1e-9 * (1.0 + torch.maximum(l.abs(), u.abs()))
    safe = torch.where(tiny, torch.ones_like(width), width)
    with torch.no_grad():
        mid_slope = curve.df((l + u) / 2)
    return torch.where(tiny, mid_slope, (curve.f(u) - curve.f(l)) / safe)


def relax_curve(curve: Curve, op: str, lower: torch.Tensor, upper: torch.Tensor,
                alpha=None) -> Relaxation:
    """Planes for a smooth curve on [lower, upper].

    Convex on [l, u]: chord above, tangent at d below; concave: the reverse; mixed curvature:
    ``curve.crossing`` slopes (or chord-parallel planes) by default, tangent slope f'(d) for both
    planes when alpha is given. d = l + alpha (u - l), alpha in [0, 1]; midpoint by default.
    """
    dtype = lower.dtype
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    if curve.in_domain is not None:
        check_domain(op, l, u, curve.in_domain(l, u), curve.domain_text)
    d = _unit(alpha, l, u)
    tangent = curve.df(d)
    chord = chord_slope(curve, l, u)
    with torch.no_grad():
        curv = curve.curvature(l, u)
    if alpha is None:
        if curve.crossing is not None:
            mix_lo, mix_up = curve.crossing(l, u)
        else:
            mix_lo = mix_up = chord
    else:
        mix_lo = mix_up = tangent
    s_lo = torch.where(curv > 0, tangent, torch.where(curv < 0, chord, mix_lo))
    s_up = torch.where(curv > 0, chord, torch.where(curv < 0, tangent, mix_up))
    return finish_planes(curve, op, s_lo, s_up, l, u, dtype)


def ibp_curve(curve: Curve, op: str, x: Interval) -> Interval:
    """Exact range of f on [l, u] (min/max over endpoints and stationary points), widened by
    a few float64 ulps and cast to the input dtype."""
    dtype = x.lower.dtype
    l, u = x.lower.to(F64), x.upper.to(F64)
    if curve.in_domain is not None:
        check_domain(op, l, u, curve.in_domain(l, u), curve.domain_text)
    if curve.increasing:  # (its range is [f(l), f(u)]: no critical points to look for)
        lo, hi = curve.f(l), curve.f(u)
    else:
        zero = torch.zeros_like(l)
        lo = extreme(curve, zero, l, u, largest=False)
        hi = extreme(curve, zero, l, u, largest=True)
    # an undefined value (f at an infinite end: x Phi(x) at -inf, sin(inf)) bounds nothing:
    # the widest interval, not NaN (which every later comparison would take as false)
    lo = torch.where(torch.isnan(lo), -math.inf, lo)
    hi = torch.where(torch.isnan(hi), math.inf, hi)
    eps = MARGIN_ULPS * torch.finfo(F64).eps
    # (an infinite end keeps its value: inf - eps inf is NaN; a lower end at +inf, Exp of a
    # masked attention score's difference, overflows in float32 as in float64)
    lo = torch.where(torch.isinf(lo), lo, lo - eps * lo.abs())
    hi = torch.where(torch.isinf(hi), hi, hi + eps * hi.abs())
    return Interval(lo.to(dtype), hi.to(dtype))


# The crossing slopes' tangent points (``sshape_crossing``), tabulated once per curve:
# d*(e) at TABLE_POINTS endpoints e = -sinh(s), s uniform on [0, TABLE_SPAN] (|e| up to
# sinh(10) ~ 1.1e4), linearly interpolated in s. Any slope is sound (``finish_planes`` takes
# the offsets' exact extremes), so the table's interpolation error (about 1e-7 of d on this
# grid) costs tightness only, in the last digits; it replaced a 40-step bisection per call
# (ERAN sigmoid 6x200: ~5 of 48 ms of its intermediate bounds).
TABLE_POINTS = 4097
TABLE_SPAN = 10.0
# (the root to |e| 2**-60 <= 1e-14: well below the interpolation error; ~4 ms per curve
# and process, once)
_TABLE_BISECTIONS = 60


class TangentTable:
    """d*(e) for an S-shaped curve f (convex left of 0, concave right, odd about (0, f(0))):
    the point d >= 0 where the line through (e, f(e)), e <= 0, touches f's concave part,
    i.e. the root of g(d) = f(d) + f'(d) (e - d) - f(e) (increasing on d >= 0: g' = f''(d)
    (e - d) >= 0; g(0) <= 0 by convexity on [e, 0], g(-e) > 0), which lies in [0, -e]."""

    def __init__(self, curve: Curve):
        self.curve = curve
        self.step = TABLE_SPAN / (TABLE_POINTS - 1)
        self._values: dict = {}

    def _build(self) -> torch.Tensor:
        f, df = self.curve.f, self.curve.df
        e = -torch.sinh(torch.linspace(0.0, TABLE_SPAN, TABLE_POINTS, dtype=F64))
        f_e = f(e)
        return bisect(lambda x: f(x) + df(x) * (e - x) - f_e, torch.zeros_like(e),
                      torch.zeros_like(e), -e, True, _TABLE_BISECTIONS)

    def values(self, device) -> torch.Tensor:
        key = str(device)
        table = self._values.get(key)
        if table is None:
            base = self._values.get("cpu")
            if base is None:
                base = self._values["cpu"] = self._build()
            table = self._values[key] = base.to(device)
        return table

    def point(self, e: torch.Tensor) -> torch.Tensor:
        """d*(min(e, 0)) (float64, interpolated; |e| past the table: its last point, still a
        valid slope's tangent point; NaN: 0)."""
        table = self.values(e.device)
        s = torch.asinh(torch.nan_to_num(-e, nan=0.0).clamp(min=0.0)).clamp_(max=TABLE_SPAN)
        pos = s / self.step
        low = pos.floor().clamp_(max=TABLE_POINTS - 2)
        frac = pos - low
        idx = low.long()
        left = table[idx]
        return torch.lerp(left, table[idx + 1], frac)


def sshape_crossing(curve: Curve):
    """Default slopes for an S-shaped f (convex left of 0, concave right) on l < 0 < u.

    Upper: the line through (l, f(l)) tangent at some d in [0, u] (chord when d would pass u);
    lower: the line through (u, f(u)) tangent at some d in [l, 0] (chord when d would pass l).
    The tangent point depends on the far end alone: d*(l) for the upper line, -d*(-u) for the
    lower (f is odd about (0, f(0))), from the curve's ``TangentTable``.
    """
    table = TangentTable(curve)

    def slopes(l, u):
        f, df = curve.f, curve.df
        chord = chord_slope(curve, l, u)
        with torch.no_grad():
            fl, fu = f(l), f(u)
            # both ends in one lookup: upper from (l, f(l)), lower from (u, f(u)) mirrored
            ends = torch.stack(torch.broadcast_tensors(l, -u))
            d_up, d_lo = table.point(ends)
            d_up = torch.minimum(d_up, u)
            d_lo = torch.maximum(-d_lo, l)
            up_chord = f(u) + df(u) * (l - u) - fl <= 0
            lo_chord = f(l) + df(l) * (u - l) - fu >= 0
        s_up = torch.where(up_chord, chord, df(d_up))
        s_lo = torch.where(lo_chord, chord, df(d_lo))
        return s_lo, s_up

    return slopes


def sshape_curvature(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """+1 on x <= 0 (convex part), -1 on x >= 0 (concave part), 0 across 0."""
    one = torch.ones_like(l)
    return torch.where(u <= 0, one, torch.where(l >= 0, -one, 0 * one))


def even_crit(r: Callable[[torch.Tensor], torch.Tensor]):
    """crit for an f' that is even in x: the points +-r(s)."""

    def crit(s, l, u):
        x = r(s)
        return [x, -x]

    return crit


def curve_rule(op: str, curve: Curve, fwd, traits, doc: str, alpha_relax: Callable | None = None,
               **fields):
    """The OpRule of an elementwise function given by ``curve`` (forward ``fwd``): IBP and the
    tangent/chord relaxation come from the curve; alpha is the tangent point in [0, 1].
    ``alpha_relax(op, lower, upper, alpha)``: a faster relaxation for a given alpha (the same
    planes up to rounding allowances), or None where it does not apply (``relax_curve`` then).
    ``fields``: the rule's split (required) and, if not the defaults of a smooth op (tangent
    alpha, generic rounding, relaxed MILP planes), its alpha, rounding and milp."""
    from bounds.registry import Milp, OpRule, Rounding
    from bounds.rules.common import TANGENT_ALPHA

    fields = {"alpha": TANGENT_ALPHA, "rounding": Rounding.GENERIC, "milp": Milp("relaxed"),
              **fields}

    def forward(node, args):
        return fwd(args[0])

    # errors name the node too: a Log that the importer made of a Pow says so in its name
    def ibp(node, args):
        return ibp_curve(curve, f"{op} node {node.name!r}", args[0])

    def relax(node, lower, upper, alpha=None):
        name = f"{op} node {node.name!r}"
        if alpha is not None and alpha_relax is not None:
            rel = alpha_relax(name, lower, upper, alpha)
            if rel is not None:
                return rel
        return relax_curve(curve, name, lower, upper, alpha)

    return OpRule(op, forward=forward, ibp=ibp, relax=relax, traits=traits, doc=doc, **fields)
