"""Exact answers for tiny ReLU (or LeakyRelu: ``slope``, the output's slope below 0; Abs:
slope -1) MLPs: enumerate activation patterns, one LP per linear piece.

On a fixed activation pattern the network is affine in x, and the pattern's region is the
polytope {x in box : z_i(x) >= 0 for active, <= 0 for inactive neurons}. The exact minimum of a
linear function of the output over the box is the minimum over patterns of an LP (HiGHS), and a
conjunction of output constraints is satisfiable iff some pattern's LP is feasible.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog


def _pieces(weights, lower, upper, fixed=None, slope: float = 0.0):
    """Yield (A_ub, b_ub, out_coef [n_out, n], out_bias [n_out]) for every sign pattern that
    interval arithmetic does not rule out; ``fixed[layer][i]`` (+1 active, -1 inactive, 0 free)
    restricts the patterns."""
    # Interval bounds to skip patterns of neurons that are stable over the box.
    lo, hi = lower.astype(np.float64), upper.astype(np.float64)
    stable = []
    for w, b in weights[:-1]:
        w = w.astype(np.float64)
        c, r = (lo + hi) / 2, (hi - lo) / 2
        zc, zr = w @ c + b, np.abs(w) @ r
        zl, zu = zc - zr, zc + zr
        stable.append(np.where(zl >= 0, 1, np.where(zu <= 0, 0, -1)))
        f_lo, f_hi = np.maximum(zl, slope * zl), np.maximum(zu, slope * zu)
        # max(z, s z) is convex: its least value is 0 (at z = 0) where the interval holds 0
        lo = np.where((zl < 0) & (zu > 0), np.minimum(0.0, np.minimum(f_lo, f_hi)),
                      np.minimum(f_lo, f_hi))
        hi = np.maximum(f_lo, f_hi)
    fixed = fixed or [np.zeros(len(layer), dtype=int) for layer in stable]
    choices = [[(1,) if f == 1 else (0,) if f == -1 else (1,) if s == 1 else (0,) if s == 0
                else (0, 1) for s, f in zip(layer, fix, strict=True)]
               for layer, fix in zip(stable, fixed, strict=True)]
    flat = [c for layer in choices for c in layer]
    sizes = [len(layer) for layer in choices]
    for pattern in itertools.product(*flat):
        a = np.eye(len(lower))
        c = np.zeros(len(lower))
        rows, rhs, pos = [], [], 0
        for (w, b), size in zip(weights[:-1], sizes, strict=True):
            za, zc = w.astype(np.float64) @ a, w.astype(np.float64) @ c + b
            p = np.array(pattern[pos:pos + size], dtype=np.float64)
            pos += size
            sign = np.where(p == 1, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
            rows.append(sign[:, None] * za)
            rhs.append(-sign * zc)
            gain = p + (1 - p) * slope  # the piece's slope: 1 active, ``slope`` inactive
            a, c = gain[:, None] * za, gain * zc
        w, b = weights[-1]
        yield np.vstack(rows), np.concatenate(rhs), w.astype(np.float64) @ a, \
            w.astype(np.float64) @ c + b


def exact_min(weights, lower, upper, coef: np.ndarray, fixed=None, slope: float = 0.0
              ) -> float:
    """min over the box (and the ``fixed`` signs) of coef @ net(x); +inf when empty."""
    best = np.inf
    bounds = list(zip(lower, upper, strict=True))
    for a_ub, b_ub, oa, oc in _pieces(weights, lower, upper, fixed, slope):
        res = linprog(coef @ oa, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status == 0:
            best = min(best, res.fun + coef @ oc)
    return best


def exact_sat(weights, lower, upper, coef: np.ndarray, rhs: np.ndarray, slope: float = 0.0
              ) -> bool:
    """True iff some x in the box meets OR_d AND_k coef[d, k] @ net(x) <= rhs[d, k]."""
    bounds = list(zip(lower, upper, strict=True))
    for a_ub, b_ub, oa, oc in _pieces(weights, lower, upper, slope=slope):
        for d in range(coef.shape[0]):
            a = np.vstack([a_ub, coef[d] @ oa])
            b = np.concatenate([b_ub, rhs[d] - coef[d] @ oc])
            res = linprog(np.zeros(len(lower)), A_ub=a, b_ub=b, bounds=bounds, method="highs")
            if res.status == 0:
                return True
    return False
