"""Gated curves x g(x), g an S-shaped gate (GELU: x Phi(x), Swish: x sigmoid(a x), Mish:
x tanh(softplus(x))): convex on [-c, c] (Mish: on an interval [c0, c1] around 0) and concave
outside, so f' decreases, increases, decreases on the three pieces.

``gated_curve`` builds the :class:`~bounds.rules.tangents.Curve` of such a function from f, f',
a float64 error bound of f', f'' and c: the critical points of g = f - s x (the roots of f' = s
on each piece, with the slack their approximation leaves) and the curvature of [l, u]. Any
slope is sound: offsets are the exact extremes of g over l, u and those roots.
"""

from __future__ import annotations

import math

import torch

from bounds.rules.tangents import Critical, Curve

# f' is computed from library functions good to a few ulps: 16 ulps of its terms, with room.
ERR_ULPS = 16 * torch.finfo(torch.float64).eps


def _sigmoid_gate_terms(z, scale):
    """sigma(z), sigma(z) sigma(-z) and the second term of f' (see ``sigmoid_gate_df``)."""
    sg = torch.sigmoid(z)
    flat = sg * torch.sigmoid(-z)
    return sg, flat, flat * scale


def sigmoid_gate_df(z, scale):
    """f' of x sigmoid(z(x)), given z(x) and ``scale`` = x z'(x): f' = sigma(z) + sigma(z)
    sigma(-z) x z' (sigma(z)(1 - sigma(z)) as sigma(z) sigma(-z): no cancellation for
    z >> 0)."""
    sg, _, bump = _sigmoid_gate_terms(z, scale)
    return sg + bump


def sigmoid_gate_df_err(z, scale):
    """``sigmoid_gate_df`` and a bound on its float64 error: 16 ulps of both terms' magnitudes
    and of their sensitivity to z's own rounding (|z| ulps, which move sigma(z) by
    sigma(z) sigma(-z) |z| and the second term by its own size times |z|)."""
    sg, flat, bump = _sigmoid_gate_terms(z, scale)
    return sg + bump, ERR_ULPS * (sg + bump.abs() + (flat + bump.abs()) * (1 + z.abs()))


# f' = s on one monotone piece of f' (``SlopeInverse``): a table of f' on TABLE_POINTS points
# of the piece (its outer pieces cut where f' underflows or rounds to its limit) for a start,
# NEWTON_STEPS Newton steps kept inside [l, u], then a check that f' - s changes sign within
# LOCAL_WIDTH (relative) of the point: wide enough for Newton's linear convergence near f''s
# extremes at +-c, and the slack it leaves, (|f'(p) - s| + err) 2e-6 (1 + |p|), is ~1e-20.
# It replaced 64 bisection steps per piece (60% of a GenBaB run on a GELU net was in them).
TABLE_POINTS = 2049
NEWTON_STEPS = 3
LOCAL_WIDTH = 1e-6
FAR = 1e100  # (x^3 of the tanh form stays finite)


class SlopeInverse:
    """The root of f'(x) = s on [a, b] inside one piece [p0, p1] of f' where f' is monotone,
    and the slack it leaves in g = f - s x (``tangents.Critical``).

    Slack: f' is monotone on the piece and f'(x*) = s, so between a point p and the root x*,
    |f'(x) - s| <= |f'(p) - s|, and |g(x*) - g(p)| <= (|df(p) - s| + err(p)) |x* - p| (err:
    the float error of df). |x* - p| is at most the width of an interval shown to hold x*:
    [p - w, p + w] where f' - s, widened by its error, has opposite signs at the two ends,
    else [a, b]. Where f' - s keeps one sign on [a, b] (widened by the error) there is no
    root: the ends are g's extremes, and the point (some x in [a, b]) needs no slack."""

    def __init__(self, df, df_err, ddf, p0: float, p1: float, increasing: bool):
        self.df, self.df_err, self.ddf = df, df_err, ddf
        self.p0, self.p1, self.increasing = p0, p1, increasing
        self._tables: dict = {}

    def _table(self, device):
        table = self._tables.get(str(device))
        if table is None:
            lo = self.p0 if math.isfinite(self.p0) else self._cut(self.p1, -1.0)
            hi = self.p1 if math.isfinite(self.p1) else self._cut(self.p0, 1.0)
            x = torch.linspace(lo, hi, TABLE_POINTS, dtype=torch.float64)
            # an outer piece: points dense at the inflection, where f'' vanishes and a root
            # is hardest to place, sparse far out where f' is flat (Swish's and Mish's pieces
            # reach exp's underflow near -745: uniformly, 0.36 apart)
            t = torch.linspace(0.0, 1.0, TABLE_POINTS, dtype=torch.float64) ** 3
            if not math.isfinite(self.p0):
                x = hi - (hi - lo) * t.flip(0)
            elif not math.isfinite(self.p1):
                x = lo + (hi - lo) * t
            v = self.df(x)
            key = v if self.increasing else -v
            table = self._tables[str(device)] = (x.to(device), key.to(device))
        return table

    def _cut(self, start: float, direction: float) -> float:
        """Where an outer piece's f' stops changing in float64 (underflow, or rounding to its
        limit): the table ends there."""
        x = start + direction * torch.logspace(-3, 3, 2000, dtype=torch.float64)
        v = self.df(x)
        moving = (v - v[-1]).abs() > 1e-300
        last = int(moving.nonzero().max()) if bool(moving.any()) else 0
        return float(x[min(last + 1, x.numel() - 1)])

    def _sign(self, x, s):
        """+1 / -1 where f'(x) - s is surely above / below 0 (oriented so that the piece
        increases), 0 where its error leaves it open."""
        v, err = self.df_err(x)
        d = (v - s) if self.increasing else (s - v)
        return (d > err).to(x.dtype) - (d < -err).to(x.dtype)

    def solve(self, s, l, u):
        a = l.clamp(min=self.p0).clamp(max=u).clamp(max=self.p1)
        b = u.clamp(max=self.p1).clamp(min=l).clamp(min=self.p0)
        a, b = torch.minimum(a, b), torch.maximum(a, b)
        s, a, b = torch.broadcast_tensors(s, a, b)
        xs, keys = self._table(s.device)
        key = s if self.increasing else -s
        k = torch.searchsorted(keys, key.contiguous()).clamp_(1, TABLE_POINTS - 1)
        x0, x1, k0, k1 = xs[k - 1], xs[k], keys[k - 1], keys[k]
        frac = torch.nan_to_num(((key - k0) / (k1 - k0)).clamp(0.0, 1.0), nan=0.5)
        x = torch.minimum(torch.maximum(torch.lerp(x0, x1, frac), a), b)
        for _ in range(NEWTON_STEPS):
            step = (self.df(x) - s) / self.ddf(x)
            step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
            x = torch.minimum(torch.maximum(x - step, a), b)
        # a root in [a, b] unless f' - s surely keeps one sign there (an infinite end: its
        # sign at +-FAR, f' being monotone and its limit reached long before)
        root = ((self._sign(a.clamp(min=-FAR), s) <= 0)
                & (self._sign(b.clamp(max=FAR), s) >= 0))
        width = LOCAL_WIDTH * (1 + x.abs())
        local = (self._sign(x - width, s) < 0) & (self._sign(x + width, s) > 0)
        span = torch.where(local, 2 * width, b - a)
        v, err = self.df_err(x)
        slack = torch.where(root, ((v - s).abs() + err) * span, torch.zeros_like(x))
        return x, torch.nan_to_num(slack, nan=math.inf)


def gated_curve(name: str, f, df, df_err, ddf, c: float | tuple[float, float]) -> Curve:
    """The curve of f, convex on [-c, c] (or on [c[0], c[1]]) and concave outside; ``df_err``
    gives f' and a bound on its float64 error (``SlopeInverse``)."""
    c_lo, c_hi = (-c, c) if isinstance(c, (int, float)) else c
    pieces = (SlopeInverse(df, df_err, ddf, -math.inf, c_lo, False),
              SlopeInverse(df, df_err, ddf, c_lo, c_hi, True),
              SlopeInverse(df, df_err, ddf, c_hi, math.inf, False))

    def crit(s, l, u):
        points, slack = [], None
        for piece in pieces:
            x, part = piece.solve(s, l, u)
            points.append(x)
            slack = part if slack is None else torch.maximum(slack, part)
        return Critical(points, slack)

    def curvature(l, u):
        one = torch.ones_like(l)
        convex = (l >= c_lo) & (u <= c_hi)
        concave = (u <= c_lo) | (l >= c_hi)
        return torch.where(convex, one, torch.where(concave, -one, 0 * one))

    return Curve(name, f, df, crit, curvature)
