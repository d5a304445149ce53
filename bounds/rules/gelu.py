"""GELU: x Phi(x) (approximate="none", Phi the normal CDF) or the tanh form
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (approximate="tanh").

Both are convex on [-c, c] and concave outside (c = sqrt 2 for the exact form, f'' = phi(x)
(2 - x^2); c is found numerically for the tanh form), so f' decreases, increases, decreases on
the three pieces. IBP: exact range; the minimum (near x = -0.7518) is the root of f' = 0 on
the middle piece, found by bisection. Relaxation: chord/tangent where the curvature has one
sign on [l, u], else two planes parallel to the chord. Sound for any slope s: offsets are the
exact extremes of f(x) - s x over l, u and the (bisected) roots of f' = s on each piece.
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l), as for the other smooth ops.
"""

from __future__ import annotations

import math

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, TableGrid
from bounds.rules.common import TANGENT_ALPHA, table_split
from bounds.rules.tangents import Critical, Curve, ibp_curve, relax_curve

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = math.sqrt(2.0 / math.pi)
_C3 = 0.044715


def _erf_f(x):
    # x Phi(x) with Phi = erfc(-x / sqrt 2) / 2: no cancellation for x << 0 (1 + erf would lose
    # every digit there)
    return x * 0.5 * torch.special.erfc(-x * _INV_SQRT2)


def _erf_terms(x):
    """f' of the erf form as its two terms: Phi(x) and x phi(x)."""
    tail = 0.5 * torch.special.erfc(-x * _INV_SQRT2)
    return tail, x * _INV_SQRT2PI * torch.exp(-0.5 * x * x)


def _erf_df(x):
    tail, bump = _erf_terms(x)
    return tail + bump


def _tanh_arg(x):
    return _K * (x + _C3 * x**3)


def _tanh_f(x):
    # 0.5 x (1 + tanh(v)) = x sigmoid(2 v), accurate for x << 0
    return x * torch.sigmoid(2 * _tanh_arg(x))


def _tanh_terms(x):
    """f' of the tanh form as sigma(z) and its second term, z = 2 v, with sigma(z)(1 -
    sigma(z)) as sigma(z) sigma(-z) (no cancellation for z >> 0): (z, sigma(z), that
    product, the second term)."""
    z = 2 * _tanh_arg(x)
    sg = torch.sigmoid(z)
    flat = sg * torch.sigmoid(-z)
    return z, sg, flat, 2 * x * flat * _K * (1 + 3 * _C3 * x * x)


def _tanh_df(x):
    _, sg, _, bump = _tanh_terms(x)
    return sg + bump


def _tanh_ddf(x):
    """f'' of the tanh form, with 1 - tanh(v)^2 = 4 sigma(2 v) sigma(-2 v) and tanh(v) =
    sigma(2 v) - sigma(-2 v) (1 - t^2 from t = tanh(v) is 0 once |v| > 19: Newton's steps
    would divide by it)."""
    z = 2 * _tanh_arg(x)
    hi, lo = torch.sigmoid(z), torch.sigmoid(-z)
    t = hi - lo
    du, ddu = _K * (1 + 3 * _C3 * x * x), 6 * _K * _C3 * x
    return 4 * hi * lo * (du + 0.5 * x * ddu - x * t * du * du)


def _inflection_tanh() -> float:
    """The positive root of f'' for the tanh form (f'' is even; it is > 0 at 1, < 0 at 2)."""
    a, b = 1.0, 2.0
    for _ in range(80):
        m = (a + b) / 2
        a, b = (m, b) if float(_tanh_ddf(torch.tensor(m, dtype=torch.float64))) > 0 else (a, m)
    return (a + b) / 2


# f' is computed from library functions good to a few ulps: 16 ulps of its terms, with room.
_ERR_ULPS = 16 * torch.finfo(torch.float64).eps


def _erf_df_err(x):
    """f'(x) of the erf form and a bound on its float64 error at x: 16 ulps of its terms'
    magnitudes and of their sensitivity to x's own rounding (|x| |d/dx| of erfc(-x / sqrt 2)
    and of x exp(-x^2 / 2): |x| phi(x) (2 + x^2))."""
    tail, bump = _erf_terms(x)
    return tail + bump, _ERR_ULPS * (tail + bump.abs() + bump.abs() * (2 + x * x))


def _erf_ddf(x):
    return _INV_SQRT2PI * torch.exp(-0.5 * x * x) * (2 - x * x)


def _tanh_df_err(x):
    """The tanh form's f'(x) and its error bound (as ``_erf_df_err``: the sigmoid's argument
    z = 2 v carries |z| ulps, which move sigma(z) by sigma (1 - sigma) |z| and the second term
    by its own size times |z|)."""
    z, sg, flat, bump = _tanh_terms(x)
    return sg + bump, _ERR_ULPS * (sg + bump.abs() + (flat + bump.abs()) * (1 + z.abs()))


# f' = s on one monotone piece of f' (``_SlopeInverse``): a table of f' on TABLE_POINTS points
# of the piece (its outer pieces cut where f' underflows or rounds to its limit) for a start,
# NEWTON_STEPS Newton steps kept inside [l, u], then a check that f' - s changes sign within
# LOCAL_WIDTH (relative) of the point: wide enough for Newton's linear convergence near f''s
# extremes at +-c, and the slack it leaves, (|f'(p) - s| + err) 2e-6 (1 + |p|), is ~1e-20.
# It replaced 64 bisection steps per piece (60% of a GenBaB run on a GELU net was in them).
TABLE_POINTS = 2049
NEWTON_STEPS = 3
LOCAL_WIDTH = 1e-6
FAR = 1e100  # (x^3 of the tanh form stays finite)


class _SlopeInverse:
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


def _make(name: str, f, df, df_err, ddf, c: float) -> Curve:
    pieces = (_SlopeInverse(df, df_err, ddf, -math.inf, -c, False),
              _SlopeInverse(df, df_err, ddf, -c, c, True),
              _SlopeInverse(df, df_err, ddf, c, math.inf, False))

    def crit(s, l, u):
        points, slack = [], None
        for piece in pieces:
            x, part = piece.solve(s, l, u)
            points.append(x)
            slack = part if slack is None else torch.maximum(slack, part)
        return Critical(points, slack)

    def curvature(l, u):
        one = torch.ones_like(l)
        convex = (l >= -c) & (u <= c)
        concave = (u <= -c) | (l >= c)
        return torch.where(convex, one, torch.where(concave, -one, 0 * one))

    return Curve(name, f, df, crit, curvature)


CURVES = {
    "none": _make("Gelu", _erf_f, _erf_df, _erf_df_err, _erf_ddf, math.sqrt(2.0)),
    "tanh": _make("Gelu(tanh)", _tanh_f, _tanh_df, _tanh_df_err, _tanh_ddf, _inflection_tanh()),
}


def _mode(node) -> str:
    mode = str(node.attrs.get("approximate", "none"))
    if mode not in CURVES:
        raise ValueError(f"Gelu node {node.name}: unknown approximate={mode!r}")
    return mode


def _forward(node, args):
    # the same cancellation-free forms as the relaxation (torch's gelu loses digits for x << 0)
    f = _erf_f if _mode(node) == "none" else _tanh_f
    return f(args[0])


def _ibp(node, args):
    return ibp_curve(CURVES[_mode(node)], "Gelu", args[0])


def _relax(node, lower, upper, alpha=None):
    return relax_curve(CURVES[_mode(node)], "Gelu", lower, upper, alpha)


def _table_key(attrs) -> str:
    return "Gelu:tanh" if str(attrs.get("approximate", "none")) == "tanh" else "Gelu"


RULES = (
    OpRule("Gelu", forward=_forward, ibp=_ibp, relax=_relax,
           traits=OpTraits(elementwise=True),
           # onnxruntime's float32 tanh form was measured off by ~eps32 |x| at x = -4.4
           alpha=TANGENT_ALPHA, rounding=Rounding.GENERIC_INPUT, milp=Milp("relaxed"),
           split=table_split(TableGrid("Gelu", (("approximate", "none"),)),
                             TableGrid("Gelu:tanh", (("approximate", "tanh"),)),
                             key_of=_table_key),
           doc="GELU (erf or tanh form): exact IBP, chord/tangent planes"),
)
