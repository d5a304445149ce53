"""Exp, Log, Reciprocal, Sqrt and Pow with a constant exponent.

Convex pieces (Exp, Reciprocal on x > 0, x^p with p(p-1) >= 0 on x >= 0, even p everywhere):
tangent at d below, chord above; concave pieces (Log, Sqrt, Reciprocal on x < 0, ...): the
reverse; odd integer p >= 3 across 0: two planes parallel to the chord. Sound for any slope s:
offsets are the exact extremes of f(x) - s x at l, u and the roots of f'(x) = s, which are in
closed form here (log s, 1/s, +-sqrt(-1/s), 1/(4 s^2), +-|s/p|^(1/(p-1))).
IBP: exact range, the same extremes with s = 0 (endpoints, and 0 for even powers).
alpha (optional, in [0, 1]): tangent point d = l + alpha (u - l); midpoint by default.
Domains (DomainError, a ValueError, otherwise): Log x > 0; Sqrt x >= 0; Reciprocal and
negative integer powers x != 0 (l > 0 or u < 0); non-integer powers x >= 0 (x > 0 if p < 0).
Exp of an input whose image overflows raises DomainError in relax (IBP returns +inf).
"""

from __future__ import annotations

import math

import torch

from bounds.float32_upper import U32
from bounds.registry import Milp, OpRule, OpTraits, Rounding, TableGrid
from bounds.rules.common import TANGENT_ALPHA, table_split
from bounds.rules.floors import round_down_float32
from bounds.rules.tangents import Curve, curve_rule, ibp_curve, relax_curve


def _const(sign: float):
    return lambda l, u: torch.full_like(l, sign)


def _nan_unless(ok, x):
    return torch.where(ok, x, torch.full_like(x, float("nan")))


def _positive(l, u):
    return l > 0


def _nonzero(l, u):
    return (l > 0) | (u < 0)


EXP = Curve("Exp", torch.exp, torch.exp, lambda s, l, u: [torch.log(s)], _const(1.0),
            increasing=True)
LOG = Curve("Log", torch.log, torch.reciprocal, lambda s, l, u: [1 / s], _const(-1.0),
            in_domain=_positive, domain_text="needs x > 0", increasing=True)
# derivatives singular at 0 are evaluated at max(x, TINY): a finite value and a finite gradient
# for alpha-CROWN (any slope is sound, offsets being exact)
TINY = 1e-300
SQRT = Curve("Sqrt", torch.sqrt, lambda x: 0.5 / torch.sqrt(x.clamp(min=TINY)),
             lambda s, l, u: [_nan_unless(s > 0, 0.25 / (s * s))], _const(-1.0),
             in_domain=lambda l, u: l >= 0, domain_text="needs x >= 0", increasing=True)


def _recip_crit(s, l, u):
    r = torch.sqrt(-1 / s)
    return [r, -r]


RECIPROCAL = Curve("Reciprocal", torch.reciprocal, lambda x: -1 / (x * x), _recip_crit,
                   lambda l, u: torch.where(l > 0, 1.0, -1.0).to(l.dtype), in_domain=_nonzero,
                   domain_text="needs an interval not containing 0")


def pow_curve(p: float) -> Curve:
    """x^p for a constant p (see the module docstring for domains and curvature)."""
    integer = float(p).is_integer()
    pos_sign = math.copysign(1.0, p * (p - 1)) if p * (p - 1) != 0 else 0.0
    neg_sign = pos_sign * (1.0 if integer and int(p) % 2 == 0 else -1.0)
    across = 1.0 if integer and p >= 2 and int(p) % 2 == 0 else 0.0

    def f(x):
        return torch.pow(x, p) if p != 0 else torch.ones_like(x)

    def df(x):
        if p in (0, 1):
            return torch.full_like(x, float(p))
        return p * torch.pow(x if integer else x.clamp(min=TINY), p - 1)

    def crit(s, l, u):
        if p in (0, 1):
            return []
        r = torch.pow((s / p).abs(), 1.0 / (p - 1))
        return [r, -r, torch.zeros_like(r)]

    def curvature(l, u):
        one = torch.ones_like(l)
        inner = torch.where(u <= 0, neg_sign * one, across * one)
        return torch.where(l >= 0, pos_sign * one, inner)

    if integer and p >= 0:
        domain, text = None, ""
    elif integer:
        domain, text = _nonzero, f"x^{p:g} needs an interval not containing 0"
    elif p > 0:
        domain, text = (lambda l, u: l >= 0), f"x^{p:g} needs x >= 0"
    else:
        domain, text = _positive, f"x^{p:g} needs x > 0"
    return Curve(f"Pow({p:g})", f, df, crit, curvature, in_domain=domain, domain_text=text)


def _exponent(node) -> float:
    p = node.attrs.get("exponent")
    if p is None:
        raise ValueError(f"Pow node {node.name}: needs a constant 'exponent' attribute")
    return float(p)


def _simple(op: str, curve: Curve, fwd, traits: OpTraits, split) -> OpRule:
    return curve_rule(op, curve, fwd, traits,
                      f"{op}: tangent/chord relaxation, alpha = tangent point in [0, 1]",
                      split=split)


def _pow_forward(node, args):
    return torch.pow(args[0], _exponent(node))


def _pow_ibp(node, args):
    return ibp_curve(pow_curve(_exponent(node)), "Pow", args[0])


def _pow_floor(node, args):
    """x^p >= 0 for an even integer p (exact and float32); None otherwise."""
    p = _exponent(node)
    if p != int(p) or int(p) % 2:
        return None
    return torch.zeros((), dtype=args[0].lower.dtype)


def _exp_floor(node, args):
    """exp(x) >= 0, exact and float32 (an underflow is 0, never below): the generic
    allowance of an unbounded output (a masked attention score's difference, Exp over
    [-4e32, 4e32]) took the lower end to -inf, and a softmax sum holding an overflowed +inf
    term to NaN."""
    return torch.zeros((), dtype=args[0].lower.dtype, device=args[0].lower.device)


def _sqrt_floor(node, args):
    """Square root is one of IEEE 754's correctly rounded operations, so a float32 sqrt of x >=
    l >= 0 is at least sqrt(l) rounded down (1 - 2u times it, rounded down, leaves room): the
    generic allowance's absolute term took the root of a LayerNorm's epsilon below 0, and the
    Reciprocal after it had no bound."""
    low = args[0].lower
    root = torch.sqrt(low.clamp(min=0)) * (1 - 2 * U32)
    return torch.where(low >= 0, round_down_float32(root), torch.full_like(low, -math.inf))


def _pow_relax(node, lower, upper, alpha=None):
    return relax_curve(pow_curve(_exponent(node)), "Pow", lower, upper, alpha)


_EL = {"elementwise": True}
RULES = (
    curve_rule("Exp", EXP, torch.exp, OpTraits(monotone=True, convex=True, **_EL),
               "Exp: tangent/chord relaxation, alpha = tangent point in [0, 1]",
               split=table_split(TableGrid("Exp")), floor=_exp_floor),
    # log and sqrt only exist for x > 0 (x >= 0): their tables span (0, 8]
    _simple("Log", LOG, torch.log,
            OpTraits(monotone=True, concave=True, domain=(0.0, math.inf), **_EL),
            table_split(TableGrid("Log", lo=0.05, hi=8.0))),
    curve_rule("Sqrt", SQRT, torch.sqrt,
               OpTraits(monotone=True, concave=True, domain=(0.0, math.inf), **_EL),
               "Sqrt: tangent/chord relaxation, alpha = tangent point in [0, 1]",
               split=table_split(TableGrid("Sqrt", lo=0.0, hi=8.0)), floor=_sqrt_floor),
    _simple("Reciprocal", RECIPROCAL, torch.reciprocal, OpTraits(**_EL), None),
    OpRule("Pow", forward=_pow_forward, ibp=_pow_ibp, relax=_pow_relax,
           traits=OpTraits(**_EL), doc="x^p, constant p: tangent/chord relaxation",
           alpha=TANGENT_ALPHA, rounding=Rounding.POWER, split=None, milp=Milp("relaxed"),
           floor=_pow_floor),
)
