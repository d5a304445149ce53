"""S-shaped activations: Sigmoid, Tanh, Atan, Erf.

Each is increasing, convex on x <= 0 and concave on x >= 0, with an even derivative that peaks
at 0. IBP: monotone, [f(l), f(u)] (plus a few float64 ulps outward).
Relaxation (see ``bounds.rules.tangents``): u <= 0: chord above, tangent below; l >= 0: tangent
above, chord below; l < 0 < u: upper line through (l, f(l)) tangent to the concave part, lower
line through (u, f(u)) tangent to the convex part (chords when the tangent point leaves [l, u]).
Sound for any slope because offsets are the exact extremes of f(x) - s x, found at l, u or
+-r(s), the two points where f'(x) = s (inverted in closed form below).
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l); tangent-type planes get slope
f'(d) (both planes when l < 0 < u), chord planes are unchanged.

With alpha (``alpha_planes``, alpha-CROWN's inner loop) the critical points of g(x) = f(x) - t x
for the tangent slope t = f'(d) are +-|d| (f' is even and unimodal), so the offsets need no
inverse r(t): g falls, rises, then falls, its min over [l, u] is at max(-|d|, l) or u and its
max at l or min(|d|, u). The slope returned is t up to the float error delta of f'(d); a true
critical point c then lies on the same side of 0 as the candidate near it, f' is monotone
between the two, so |g'| <= delta there and the candidate misses the extreme by at most
delta (u - l): the offsets are pushed out by that too (DERIVATIVE_ERR plus the slope's rounding
to the engine dtype). Chord planes (alpha does not move them) lie above a convex piece or below
a concave one, where the extreme of g is at an end. The gradient in alpha follows the envelope
theorem (d offset / d t = -x*, x* the extreme's point) through t = f'(d): one autograd node per
relaxation instead of the curve's whole computation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bounds.registry import OpRule, OpTraits, TableGrid
from bounds.rules.common import table_split
from bounds.rules.tangents import (
    F64,
    MARGIN_ULPS,
    Curve,
    curve_rule,
    even_crit,
    margin,
    sshape_crossing,
    sshape_curvature,
)
from bounds.types import Relaxation

_TRAITS = OpTraits(monotone=True, elementwise=True)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _sigmoid_r(s):
    # sigma(-r) = q with q (1 - q) = s; stable root q = 2 s / (1 + sqrt(1 - 4 s))
    q = 2 * s / (1 + torch.sqrt(1 - 4 * s))
    return torch.log1p(-q) - torch.log(q)


def _tanh_r(s):
    # 1 - tanh(r)^2 = s: r = atanh(t), t = sqrt(1 - s); atanh(t) = log(1 + t) - log(s) / 2
    t = torch.sqrt(1 - s)
    return torch.log1p(t) - 0.5 * torch.log(s)


def _atan_r(s):
    return torch.sqrt((1 - s) / s)


def _erf_r(s):
    return torch.sqrt(torch.log(_TWO_OVER_SQRT_PI / s))


def _dsigmoid(x):
    y = torch.sigmoid(x)
    return y * (1 - y)


def _curve(name, f, df, r) -> Curve:
    curve = Curve(name, f, df, even_crit(r), sshape_curvature, increasing=True)
    return dataclasses.replace(curve, crossing=sshape_crossing(curve))


CURVES = {
    "Sigmoid": _curve("Sigmoid", torch.sigmoid, _dsigmoid, _sigmoid_r),
    "Tanh": _curve("Tanh", torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, _tanh_r),
    "Atan": _curve("Atan", torch.atan, lambda x: 1 / (1 + x * x), _atan_r),
    "Erf": _curve("Erf", torch.erf, lambda x: _TWO_OVER_SQRT_PI * torch.exp(-x * x), _erf_r),
}
_FORWARD = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Atan": torch.atan, "Erf": torch.erf}


def _sigmoid_value_slope(d):
    y = torch.sigmoid(d)
    return y, y * (1 - y)


def _tanh_value_slope(d):
    y = torch.tanh(d)
    return y, 1 - y * y


def _atan_value_slope(d):
    return torch.atan(d), 1 / (1 + d * d)


def _erf_value_slope(d):
    return torch.erf(d), _TWO_OVER_SQRT_PI * torch.exp(-d * d)


@dataclass(frozen=True)
class _Kit:
    """What the alpha planes evaluate at the tangent point d: f(d) and f'(d) (float64, the
    slope as ``Curve.df`` computes it), and f''(d) from them (the slope's gradient in d)."""

    value_slope: Callable
    second: Callable


_KITS = {
    "Sigmoid": _Kit(_sigmoid_value_slope, lambda d, y, t: t * (1 - 2 * y)),
    "Tanh": _Kit(_tanh_value_slope, lambda d, y, t: -2 * y * t),
    "Atan": _Kit(_atan_value_slope, lambda d, y, t: -2 * d * t * t),
    "Erf": _Kit(_erf_value_slope, lambda d, y, t: -2 * d * t),
}
# Absolute float64 error of the slopes above (f' <= 2/sqrt(pi), a few roundings of library
# values), with room to spare: 16 ulps of 1.
DERIVATIVE_ERR = 16 * torch.finfo(F64).eps


def _chord_planes(l, u, fl, fu, w, margin_of, dtype):
    """The chord and its planes' offsets (alpha does not move them), float64: the chord is
    only used above a convex piece or below a concave one, where f(x) - c x is convex
    (concave) and its max (min) over [l, u] is at an end, so any slope is sound there (a
    zero-width interval's 0/0 becomes 0)."""
    chord = torch.nan_to_num((fu - fl) / w, nan=0.0, posinf=0.0, neginf=0.0)
    if dtype != F64:
        chord = chord.to(dtype).to(F64)
    at_l, at_u = torch.addcmul(fl, chord, l, value=-1), torch.addcmul(fu, chord, u, value=-1)
    lo, up = torch.minimum(at_l, at_u), torch.maximum(at_l, at_u)
    return chord, lo - margin_of(lo, chord), up + margin_of(up, chord)


def _tangent_extremes(curve: Curve, t, d, l, u, fl, fu):
    """min and max over [l, u] of g(x) = f(x) - t x (module docstring): g falls, rises, falls
    (critical points -|d|, |d|), so its min is at max(-|d|, l) or u and its max at l or
    min(|d|, u). Returns (min, max, and the four (value, point) pairs in that order)."""
    r = d.abs()
    a_pt, b_pt = torch.maximum(-r, l), torch.minimum(r, u)
    g_a = torch.addcmul(curve.f(a_pt), t, a_pt, value=-1)
    g_u = torch.addcmul(fu, t, u, value=-1)
    g_l = torch.addcmul(fl, t, l, value=-1)
    g_b = torch.addcmul(curve.f(b_pt), t, b_pt, value=-1)
    return (torch.minimum(g_a, g_u), torch.maximum(g_l, g_b),
            (g_a, a_pt), (g_u, u), (g_l, l), (g_b, b_pt))


class _AlphaPlanes(torch.autograd.Function):
    """alpha -> (lower slope, lower offset, upper slope, upper offset) of an S-shaped curve;
    the gradient by the envelope theorem (module docstring)."""

    @staticmethod
    def forward(ctx, alpha, l, u, op, dtype, clamp):
        curve, kit = CURVES[op], _KITS[op]
        a = alpha.detach().to(F64)
        inside = None
        if clamp:
            inside, a = (a >= 0) & (a <= 1), a.clamp(0.0, 1.0)
        w = u - l
        d = torch.addcmul(l, a, w)  # (may leave [l, u] by rounding: a wider min/max)
        y, t = kit.value_slope(d)  # t >= 0: the curves increase
        eps = torch.finfo(dtype).eps
        rounding = 0.0
        if dtype != F64:
            t, rounding = t.to(dtype).to(F64), eps * (0.5 + eps)
        fl, fu = curve.f(l), curve.f(u)
        lo, up, *pairs = _tangent_extremes(curve, t, d, l, u, fl, fu)
        # tangents.margin and the allowance: DERIVATIVE_ERR and the slope's rounding to the
        # dtype, times (u - l). In float64 the margin takes |offset| <= max(|f(l)|, |f(u)|)
        # + |s| mag (f is monotone): at most 1e-13 wider, fewer passes over the planes.
        ulps, mag = MARGIN_ULPS * eps, torch.maximum(l.abs(), u.abs())
        fixed = DERIVATIVE_ERR * w
        if dtype == F64:
            bound = ulps * torch.maximum(fl.abs(), fu.abs())
            fixed = fixed + bound

            def margin_of(offset, slope):
                return bound + 2 * ulps * slope.abs() * mag
        else:
            lo, up = torch.add(lo, lo.abs(), alpha=-ulps), torch.add(up, up.abs(), alpha=ulps)

            def margin_of(offset, slope):
                return margin(offset, slope, mag, dtype)
        slack = torch.addcmul(fixed, t, (2 if dtype == F64 else 1) * ulps * mag + rounding * w)
        # S-shapes are convex on x <= 0 and concave on x >= 0 (sshape_curvature)
        convex, concave = u <= 0, l >= 0
        chord, c_lo, c_up = _chord_planes(l, u, fl, fu, w, margin_of, dtype)
        out = (torch.where(concave, chord, t), torch.where(concave, c_lo, lo - slack),
               torch.where(convex, chord, t), torch.where(convex, c_up, up + slack))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(d, y, t, w, inside, ~concave, ~convex,
                                  *(x for pair in pairs for x in pair))
        ctx.alpha_shape, ctx.alpha_dtype, ctx.op = alpha.shape, alpha.dtype, op
        return tuple(x.to(dtype) for x in out)

    @staticmethod
    def backward(ctx, g_slo, g_olo, g_sup, g_oup):
        d, y, t, w, inside, t_lo, t_up, g_a, a_pt, g_u, u, g_l, l, g_b, b_pt = ctx.saved_tensors
        # d/dt of each output where it is a tangent plane: slope 1, offset -x* (the point
        # of the extreme); then dt/dalpha = f''(d) (u - l)
        g = None
        for g_s, g_o, used, point in (
                (g_slo, g_olo, t_lo, lambda: torch.where(g_u < g_a, u, a_pt)),
                (g_sup, g_oup, t_up, lambda: torch.where(g_b > g_l, b_pt, l))):
            part = None if g_s is None else g_s.to(F64)
            if g_o is not None:
                step = g_o.to(F64) * point()
                part = -step if part is None else part - step
            if part is not None:
                part = part * used
                g = part if g is None else g + part
        if g is None:
            return None, None, None, None, None, None
        scale = _KITS[ctx.op].second(d, y, t) * w
        if inside is not None:
            scale = scale * inside
        grad = (g * scale).sum_to_size(ctx.alpha_shape).to(ctx.alpha_dtype)
        return grad, None, None, None, None, None


def alpha_planes(op: str, name: str, lower: torch.Tensor, upper: torch.Tensor,
                 alpha: torch.Tensor) -> Relaxation | None:
    """The planes of ``relax_curve`` for a given alpha (tangent point d = l + alpha (u - l)),
    the same up to the allowances of the module docstring; None (use ``relax_curve``) where
    an end is infinite or so large that the planes could overflow the dtype, or an alpha is
    not a number."""
    dtype = lower.dtype
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    mag = torch.maximum(l.abs(), u.abs())
    if (not mag.numel() or not alpha.numel() or not bool(torch.isfinite(u - l).all())
            or float(mag.max()) > torch.finfo(dtype).max / 4):
        return None
    least, most = (float(v) for v in torch.aminmax(alpha.detach()))
    if math.isnan(least) or math.isnan(most):
        return None
    return Relaxation(*_AlphaPlanes.apply(alpha, l, u, op, dtype, least < 0 or most > 1))


def _rule(op: str) -> OpRule:
    def fast(name, lower, upper, alpha):
        return alpha_planes(op, name, lower, upper, alpha)

    return curve_rule(op, CURVES[op], _FORWARD[op], _TRAITS,
                      f"{op}: S-shaped; tangent/chord relaxation, alpha = tangent point in [0, 1]",
                      alpha_relax=fast, split=table_split(TableGrid(op)))


RULES = tuple(_rule(op) for op in ("Sigmoid", "Tanh", "Atan", "Erf"))


# ---------------------------------------------------------------- guide planes (no bound)

@dataclass(frozen=True)
class GuideTangents:
    """Tangent planes at d = l + alpha (u - l) of an S-shaped curve, as a guide
    (``guide_tangents``), [B, S, *shape] each: the point d, slope t = f'(d), g(d) for
    g(x) = f(x) - t x and dt/dalpha = f''(d) (u - l); at the ``cross`` positions [B, S, k]
    (flat) how far the min and max of g over [l, u] lie below / above g(d), and how far their
    points lie from d (by the envelope theorem d min / dt = -(its point))."""

    d: torch.Tensor
    slope: torch.Tensor
    at_d: torch.Tensor
    dslope: torch.Tensor
    lower_fix: torch.Tensor
    upper_fix: torch.Tensor
    x_lower_fix: torch.Tensor
    x_upper_fix: torch.Tensor


def guide_tangents(op: str, alpha: torch.Tensor, l: torch.Tensor, w: torch.Tensor,
                   cross: torch.Tensor, ends: tuple) -> GuideTangents:
    """The tangent planes of S-shaped ``op`` at l + alpha w (w = u - l) in the inputs' dtype,
    with no rounding allowance: a guide for alpha-CROWN's iterations
    (``bounds.engine.guide``), never a bound. Where u <= 0 (convex) the min of g over [l, u]
    is g(d) and where l >= 0 (concave) its max is; elsewhere, at the flat positions ``cross``
    (``ends``: l, u, f(l), f(u) there, [B, 1, k] each), the extremes are taken over d,
    p = clamp(-d, l, u) and an end: the critical points of g are +-|d| (module docstring),
    so that is exact."""
    with torch.no_grad():
        kit = _KITS[op]
        d = torch.addcmul(l, alpha, w)
        if op == "Sigmoid":  # (fewer passes than the kit's forms: the guide only steers)
            y = torch.sigmoid(d)
            t = torch.addcmul(y, y, y, value=-1)
            dslope = torch.addcmul(t, t, y, value=-2).mul_(w)
        else:
            y, t = kit.value_slope(d)
            dslope = kit.second(d, y, t).mul_(w)
        at_d = torch.addcmul(y, t, d, value=-1)
        fixes = _crossing_fixes(op, d, t, at_d, cross, ends)
        return GuideTangents(d, t, at_d, dslope, *fixes)


def _crossing_fixes(op: str, d, t, at_d, cross: torch.Tensor, ends: tuple) -> list:
    """``GuideTangents``' fixes at the positions ``cross`` (small: boolean work is fine)."""
    l, u, fl, fu = ends
    d, t, g_d = (x.flatten(2).index_select(2, cross) for x in (d, t, at_d))
    p = torch.minimum(torch.maximum(-d, l), u)
    g_p = torch.addcmul(CURVES[op].f(p), t, p, value=-1)
    g_l = torch.addcmul(fl, t, l, value=-1)
    g_u = torch.addcmul(fu, t, u, value=-1)
    x_lo = torch.where(g_d <= g_p, d, p)
    lo = torch.minimum(g_d, g_p)
    x_lo = torch.where(g_u < lo, u, x_lo)
    x_up = torch.where(g_d >= g_p, d, p)
    up = torch.maximum(g_d, g_p)
    x_up = torch.where(g_l > up, l, x_up)
    return [torch.minimum(lo, g_u) - g_d, torch.maximum(up, g_l) - g_d, x_lo - d, x_up - d]


GUIDE_OPS = frozenset(CURVES)
