"""Forward-mode linear bounds: every value gets lower and upper linear functions of the input.

    L(x) = lw . x + lb  <=  value  <=  uw . x + ub      for x in the box,

with ``lw``/``uw`` of shape ``[B, d, *shape]`` (d = input size). Propagating them costs
O(d) per element, so for low-dimensional inputs (ACAS Xu: d = 5) this computes intermediate
bounds orders of magnitude faster than backward CROWN, whose cost grows with the number of
neurons bounded. It is looser than backward CROWN; the final spec bound still uses CROWN.

Rules: affine ops with a weight split it into positive and negative parts (W+ L + W- U);
monotone affine ops map lower to lower; Sub/Neg swap; Mul/Div by a constant split by its sign;
elementwise nonlinearities compose their relaxation planes with the sign-split functions; any
other op falls back to its interval (constant functions), which is always sound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bounds.engine.box_dot import box_lower, box_upper
from bounds.engine.constants import node_args
from bounds.graph import Node
from bounds.registry import rules
from bounds.rules.linear import WEIGHTED_OPS
from bounds.types import Interval


@dataclass(frozen=True)
class LinearFunctions:
    lw: torch.Tensor  # [B, d, *shape]
    lb: torch.Tensor  # [B, *shape]
    uw: torch.Tensor
    ub: torch.Tensor

    def concretize(self, box: Interval) -> Interval:
        b, d = self.lw.shape[:2]
        lo, hi = box.lower.reshape(b, d), box.upper.reshape(b, d)

        def by_input(w):  # [B, d, *shape] -> [B, positions, d]: the sum runs over the inputs
            # (reshape, not flatten(2): a scalar value, shape (), has w [B, d])
            return w.reshape(b, d, -1).transpose(1, 2)

        lower = box_lower(by_input(self.lw), lo, hi).reshape(b, *self.lw.shape[2:])
        upper = box_upper(by_input(self.uw), lo, hi).reshape(b, *self.uw.shape[2:])
        return Interval(self.lb + lower, self.ub + upper)

    def widen(self, delta: torch.Tensor | None) -> LinearFunctions:
        if delta is None:
            return self
        return LinearFunctions(self.lw, self.lb - delta, self.uw, self.ub + delta)


def identity_functions(box: Interval, shape) -> LinearFunctions:
    b, d = box.lower.shape[0], box.lower[0].numel()
    eye = torch.eye(d, dtype=box.lower.dtype, device=box.lower.device)
    w = eye.reshape(1, d, *shape).expand(b, d, *shape)
    zero = torch.zeros((b, *shape), dtype=box.lower.dtype, device=box.lower.device)
    return LinearFunctions(w, zero, w, zero)


# A coordinate whose box is at most this many float32 spacings wide is pinned: a spec's
# fixed value that no float32 represents widens to its two float32 neighbours
# (``InputRegion.bound_box``), which must not count as a free input (VGG16 with 10 moving
# pixels of 150528: forward mode over 10 inputs, not 150526).
PINNED_SPACINGS = 4


def free_coordinates(box: Interval) -> torch.Tensor:
    """Indices of the input coordinates some domain of ``box`` [B, ...] leaves free: wider
    than PINNED_SPACINGS float32 spacings. The others are pinned: intervals no wider than
    float32 rounding (exact points among them), carried as interval constants."""
    b = box.lower.shape[0]
    lower, upper = box.lower.reshape(b, -1), box.upper.reshape(b, -1)
    magnitude = torch.maximum(lower.abs(), upper.abs())
    # float32's spacing at x is at most 2**-23 |x| (and 2**-149 near zero)
    pinned = (upper - lower) <= PINNED_SPACINGS * torch.clamp(magnitude * 2.0**-23, min=2.0**-149)
    return torch.nonzero((~pinned).any(0))[:, 0]


def free_input_functions(box: Interval, shape, free: torch.Tensor
                         ) -> tuple[LinearFunctions, Interval]:
    """The input as linear functions of its ``free`` coordinates z = x[free], and the box of
    z. The other coordinates are constants: their lower end in the lower function, their
    upper end in the upper one (x = x_pinned + sum_j e_free[j] z_j). Forward mode over z costs
    len(free) per element instead of the whole input size (MetaRoom: ~150 of 5376 pixels
    move)."""
    b, d = box.lower.shape[0], box.lower[0].numel()
    f = free.shape[0]
    lower, upper = box.lower.reshape(b, d), box.upper.reshape(b, d)
    w = torch.zeros((f, d), dtype=lower.dtype, device=lower.device)
    w[torch.arange(f, device=lower.device), free] = 1.0
    w = w.reshape(1, f, *shape).expand(b, f, *shape)
    pinned_lower, pinned_upper = lower.clone(), upper.clone()
    pinned_lower[:, free] = 0.0
    pinned_upper[:, free] = 0.0
    zbox = Interval(lower[:, free], upper[:, free])
    return (LinearFunctions(w, pinned_lower.reshape(b, *shape), w,
                            pinned_upper.reshape(b, *shape)), zbox)


def constant_functions(interval: Interval, d: int) -> LinearFunctions:
    b = interval.lower.shape[0]
    w = torch.zeros((b, d, *interval.lower.shape[1:]), dtype=interval.lower.dtype,
                    device=interval.lower.device)
    return LinearFunctions(w, interval.lower, w, interval.upper)


def _fold(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])


def _unfold(w: torch.Tensor, b: int) -> torch.Tensor:
    return w.reshape(b, -1, *w.shape[1:])


def _weighted(node: Node, rule, args: list, f: LinearFunctions) -> LinearFunctions:
    b = f.lb.shape[0]
    w = args[1]
    bias = args[2] if len(args) > 2 else None
    pos, neg = w.clamp(min=0), w.clamp(max=0)

    def apply(x, weight, with_bias):
        a = [x, weight] + ([bias if with_bias else None] if len(args) > 2 else [])
        return rule.forward(node, a)

    lw = _unfold(apply(_fold(f.lw), pos, False) + apply(_fold(f.uw), neg, False), b)
    uw = _unfold(apply(_fold(f.uw), pos, False) + apply(_fold(f.lw), neg, False), b)
    lb = apply(f.lb, pos, True) + apply(f.ub, neg, False)
    ub = apply(f.ub, pos, True) + apply(f.lb, neg, False)
    return LinearFunctions(lw, lb, uw, ub)


def _monotone_affine(node: Node, rule, args: list, funcs: list) -> LinearFunctions:
    """Nondecreasing affine op: f(L) <= f(value) <= f(U); its linear part maps the weights."""
    b = funcs[0].lb.shape[0]

    def call(values):
        it = iter(values)
        return rule.forward(node, [next(it) if isinstance(a, Interval) else a for a in args])

    f0 = call([torch.zeros_like(f.lb[:1]) for f in funcs])
    lw = _unfold(call([_fold(f.lw) for f in funcs]) - f0, b)
    uw = _unfold(call([_fold(f.uw) for f in funcs]) - f0, b)
    return LinearFunctions(lw, call([f.lb for f in funcs]), uw, call([f.ub for f in funcs]))


def _scaled(node: Node, rule, args: list, f: LinearFunctions) -> LinearFunctions:
    """Mul or Div by a constant: elementwise scale s = forward(1); split by its sign."""
    pos = 0 if node.inputs[0] is not None else 1
    ones = [torch.ones_like(f.lb) if i == pos else a for i, a in enumerate(args)]
    scale = rule.forward(node, ones)
    sp, sn = scale.clamp(min=0), scale.clamp(max=0)
    sp_w, sn_w = sp.unsqueeze(1), sn.unsqueeze(1)
    return LinearFunctions(sp_w * f.lw + sn_w * f.uw, sp * f.lb + sn * f.ub,
                           sp_w * f.uw + sn_w * f.lw, sp * f.ub + sn * f.lb)


def _relaxed(rel, f: LinearFunctions) -> LinearFunctions:
    def split(slope):
        return slope.clamp(min=0), slope.clamp(max=0)

    lp, ln = split(rel.lower_slope)
    up, un = split(rel.upper_slope)
    lw = lp.unsqueeze(1) * f.lw + ln.unsqueeze(1) * f.uw
    uw = up.unsqueeze(1) * f.uw + un.unsqueeze(1) * f.lw
    lb = lp * f.lb + ln * f.ub + rel.lower_offset
    ub = up * f.ub + un * f.lb + rel.upper_offset
    return LinearFunctions(lw, lb, uw, ub)


def propagate_functions(node: Node, funcs: dict, bounds: dict, device, dtype):
    """Linear functions of ``node``'s value, or None when only its interval is usable."""
    rule = rules().get(node.op, node.name)
    dyn = [funcs.get(n) for n in node.dynamic_inputs]
    if any(f is None for f in dyn):
        return None
    args = node_args(node, bounds, device, dtype)
    if node.op in WEIGHTED_OPS and len(dyn) == 1:
        return _weighted(node, rule, args, dyn[0])
    if rule.relax is not None and rule.traits.elementwise:
        x = bounds[node.dynamic_inputs[0]]
        return _relaxed(rule.relax(node, x.lower, x.upper), dyn[0])
    if node.op in ("Mul", "Div") and len(dyn) == 1 and (node.op == "Mul" or node.inputs[1] is None):
        return _scaled(node, rule, args, dyn[0])
    if node.op == "Sub" and len(dyn) == 2:
        a, c = dyn
        return LinearFunctions(a.lw - c.uw, a.lb - c.ub, a.uw - c.lw, a.ub - c.lb)
    if node.op == "Sub" and len(dyn) == 1:
        if node.inputs[0] is not None:
            return _monotone_affine(node, rule, args, dyn)
        return None
    if node.op == "Neg":
        a = dyn[0]
        return LinearFunctions(-a.uw, -a.ub, -a.lw, -a.lb)
    if rule.traits.affine and rule.traits.monotone:
        return _monotone_affine(node, rule, args, dyn)
    return None
