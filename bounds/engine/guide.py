"""Guide passes for alpha-CROWN's iterations on chains of affine nodes and S-shaped activations.

alpha-CROWN's loop only picks alphas (``work_dtype``): every alpha in range gives a sound bound,
and the bound reported is one pass of the engine (``crown.backward_bound``) with the alphas
found. So the loop's own passes may be computed any way that tracks that pass closely: here,
on a chain ``input -> affine -> S-shape -> affine -> ... -> start`` (MLPs such as ERAN's
sigmoid nets), a pass built once per optimisation with everything that does not depend on
alpha taken out of the loop (each activation's default planes, which planes alpha moves, the
box's centre and radius, the steps before the first alpha), and per iteration only the
tangent planes (``s_shaped.guide_tangents``: g(d) where the curve is convex or concave on
[l, u], the exact extremes only where it crosses 0, no allowances) and the coefficient
algebra in one autograd node per activation with its backward written out. Alphas are dense
over each value (positions without one keep the default planes through a 0/1 mask: no
gathers or scatters of the coefficients). ERAN sigmoid 6x200, 400 rows of the sixth layer in
float32: about 22 ms per iteration (forward and gradient) against 36 ms for the engine pass.

The guide's number is never a bound: it leaves out the planes' rounding margins (and the
engine's allowances for float32 adjoints) and computes in whatever dtype it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from bounds.engine.constants import node_args
from bounds.engine.crown import default_relaxation
from bounds.engine.patches_step import conv_like
from bounds.engine.results import Intermediates, PassCache
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from bounds.rules.s_shaped import GUIDE_OPS, guide_tangents

# a backward step: (coefficients, alphas) -> (input coefficients, offset [B, S] or None)
Step = Callable[[torch.Tensor, Mapping], tuple[torch.Tensor, torch.Tensor | None]]


def _spec_dot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum over positions of a [B, S, *shape] * v [B, *shape] -> [B, S]."""
    b, s = a.shape[:2]
    return torch.bmm(a.reshape(b, s, -1), v.reshape(v.shape[0], -1, 1).expand(b, -1, 1)
                     ).squeeze(-1)


def _affine_step(inter: Intermediates, node, rule) -> Step | None:
    """The rule's backward step (None where the rule declines: the engine then takes the
    vector-Jacobian product, which the guide does not)."""
    args = node_args(node, inter.bounds, inter.device, inter.dtype)
    probe = torch.zeros((1, 1, *node.shape), device=inter.device, dtype=inter.dtype)
    if rule.backward(node, probe, args)[0] is None:
        return None

    def step(a, alphas):
        coefs, offset = rule.backward(node, a, args)
        dyn = [c for c, name in zip(coefs, node.inputs, strict=False) if name is not None]
        return dyn[0], offset

    return step


def _planes(rel, shape) -> list[torch.Tensor]:
    return [t.reshape(shape).unsqueeze(1) for t in (rel.lower_slope, rel.lower_offset,
                                                     rel.upper_slope, rel.upper_offset)]


def _sshape_step(inter: Intermediates, planes: tuple, node, rule,
                 positions: torch.Tensor | None, has_alpha: bool) -> Step | None:
    """The step through S-shaped ``node``: the default planes, and where the node has an
    alpha (at ``positions``, flat indices; None: all) its tangent planes on the side(s) that
    alpha moves (lower where l < 0, upper where u > 0: the others are chords)."""
    rel = default_relaxation(*planes, node, rule)
    if rel is None:
        return None
    x = inter.bounds[node.dynamic_inputs[0]]
    full = x.lower.shape
    lo_s, lo_o, up_s, up_o = (p.to(x.lower.dtype) for p in _planes(rel, full))
    if not has_alpha:
        gap_s, gap_o = up_s - lo_s, up_o - lo_o

        def fixed(a, alphas):
            neg = a.clamp(max=0)
            offset = _spec_sum(a * lo_o + neg * gap_o)
            return torch.addcmul(a * lo_s, neg, gap_s), offset

        return fixed
    if not (bool(torch.isfinite(x.lower).all()) and bool(torch.isfinite(x.upper).all())):
        return None
    l, u = x.lower.unsqueeze(1), x.upper.unsqueeze(1)
    mask = torch.ones(full[0], full[1:].numel(), dtype=l.dtype, device=l.device)
    if positions is not None:
        mask.zero_()
        mask[:, positions] = 1.0
    mask = mask.reshape(full).unsqueeze(1)
    kit = _SKit.build(node, rule, l, u, (lo_s, lo_o, up_s, up_o), mask)
    name = node.name

    def moving(a, alphas):
        return _SStep.apply(a, alphas[name], kit)

    return moving


@dataclass(frozen=True)
class _SKit:
    """What an S-shaped node's guide step reads ([B, 1, *shape] each): its input bounds, 0/1
    masks of the positions whose lower / upper plane alpha moves (tangent where l < 0 / u >
    0; chords elsewhere are the default planes), the default planes where alpha does not
    move them (0 where it does), and at the positions ``cross`` where it moves both (in
    some domain: l < 0 < u) the masks, l, u, f(l), f(u) ([B, 1, k])."""

    op: str
    l: torch.Tensor
    u: torch.Tensor
    m_lo: torch.Tensor
    m_up: torch.Tensor
    fixed: tuple
    cross: torch.Tensor
    cross_masks: tuple
    ends: tuple

    @staticmethod
    def build(node, rule, l, u, planes, mask) -> _SKit:
        m_lo, m_up = mask * (l < 0), mask * (u > 0)
        lo_s, lo_o, up_s, up_o = planes
        fixed = (lo_s * (1 - m_lo), lo_o * (1 - m_lo), up_s * (1 - m_up), up_o * (1 - m_up))
        both = (m_lo * m_up).reshape(l.shape[0], -1)
        cross = (both > 0).any(0).nonzero().flatten()

        def at(t):
            return t.flatten(2).index_select(2, cross)

        ends = (at(l), at(u), at(rule.forward(node, [l])), at(rule.forward(node, [u])))
        return _SKit(node.op, l, u, m_lo, m_up, fixed, cross, (at(m_lo), at(m_up)), ends)


def _above(x: torch.Tensor) -> torch.Tensor:
    """1 where x > 0 (up to 1e-30), else 0: no boolean tensor (comparisons and where cost
    several arithmetic passes over the same elements on CPU)."""
    return (x * 1e30).clamp_(0.0, 1.0)


class _SStep(torch.autograd.Function):
    """(a [B, S, *shape], alpha) -> (a+ s_lo + a- s_up, sum a+ o_lo + a- o_up [B, S]) through
    an S-shaped node's planes (alpha's tangents where the kit's masks say, the default planes
    elsewhere), with its backward written out: a few arithmetic passes over [B, S, *shape]
    (the crossing positions' corrections on those alone) and no boolean tensor."""

    @staticmethod
    def forward(ctx, a, alpha, kit: _SKit):
        tan = guide_tangents(kit.op, alpha.detach(), kit.l, kit.u, kit.cross, kit.ends)
        lo_s, lo_o, up_s, up_o = kit.fixed
        m_lo_c, m_up_c = kit.cross_masks
        s_lo = torch.addcmul(lo_s, kit.m_lo, tan.slope)
        s_up = torch.addcmul(up_s, kit.m_up, tan.slope)
        o_lo = torch.addcmul(lo_o, kit.m_lo, tan.at_d)
        o_up = torch.addcmul(up_o, kit.m_up, tan.at_d)
        o_lo.flatten(2).index_add_(2, kit.cross, m_lo_c * tan.lower_fix)
        o_up.flatten(2).index_add_(2, kit.cross, m_up_c * tan.upper_fix)
        pos = a.clamp(min=0)
        neg = a - pos
        new = torch.addcmul(pos * s_lo, neg, s_up)
        offset = torch.addcmul(pos * o_lo, neg, o_up).flatten(2).sum(-1)
        moved = torch.addcmul(pos * kit.m_lo, neg, kit.m_up)
        pos_c = pos.flatten(2).index_select(2, kit.cross)
        neg_c = neg.flatten(2).index_select(2, kit.cross)
        x_fix = torch.addcmul(pos_c * m_lo_c * tan.x_lower_fix, neg_c * m_up_c,
                              tan.x_upper_fix)
        ctx.save_for_backward(_above(a), moved, s_lo, s_up, o_lo, o_up, tan.dslope, x_fix,
                              torch.addcmul(kit.l, alpha.detach(), kit.u - kit.l))
        ctx.cross = kit.cross
        return new, offset

    @staticmethod
    def backward(ctx, g_new, g_off):
        up, moved, s_lo, s_up, o_lo, o_up, dslope, x_fix, d = ctx.saved_tensors
        g_off = g_off.reshape(*g_off.shape, *([1] * (g_new.dim() - 2)))
        g_pos = torch.addcmul(g_new * s_lo, g_off, o_lo)
        g_neg = torch.addcmul(g_new * s_up, g_off, o_up)
        g_a = torch.addcmul(g_neg, up, g_pos - g_neg)
        # d new / dt = moved; d offset / dt = -(moved d + the crossing points' fixes)
        g_t = moved * torch.addcmul(g_new, g_off, d, value=-1)
        g_t.flatten(2).index_add_(2, ctx.cross, -g_off.flatten(2) * x_fix)
        return g_a, g_t * dslope, None


def _spec_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(-1)


def chain(graph, start: str) -> list | None:
    """The nodes from ``start`` back to the input, in backward order, when they form a chain
    the guide takes (every node before ``start`` on it, each with one dynamic input, affine
    with a backward rule or S-shaped, none of a convolutional value); else None."""
    names = [n.name for n in graph.nodes]
    if start not in names:
        return None
    current, out = start, []
    for node in reversed(graph.nodes[: names.index(start) + 1]):
        if node.name != current or len(node.dynamic_inputs) != 1:
            return None
        rule = rules().get(node.op)
        if node.op not in GUIDE_OPS and not (node_is_affine(node, rule)
                                             and rule.backward is not None):
            return None
        if conv_like(graph, node.name):  # (the engine's window steps: its own business)
            return None
        out.append(node)
        current = node.dynamic_inputs[0]
    return out if current == graph.inputs[0].name else None


class ChainGuide:
    """Guide passes of coef . value(start) on a chain (module docstring): ``lower(alphas)``
    [B, S] for dense alphas ([B, S, *shape] per node). Build with :func:`chain_guide`."""

    def __init__(self, first: torch.Tensor, const: torch.Tensor, steps: list, input_box):
        self.first, self.const, self.steps = first, const, steps
        self.centre, self.radius = input_box

    def lower(self, alphas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a, total = self.first, self.const
        for step, delta in self.steps:
            if delta is not None:
                total = total - _spec_dot(a.abs(), delta)
            a, offset = step(a, alphas)
            if offset is not None:
                total = total + offset
        return total + _spec_dot(a, self.centre) - _spec_dot(a.abs(), self.radius)


def chain_guide(inter: Intermediates, cache: PassCache, start: str, coef: torch.Tensor,
                columns: Mapping[str, torch.Tensor | None],
                planes: tuple | None = None) -> ChainGuide | None:
    """The guide of coef [B, S, *shape(start)] . value(start) under dense alphas of the nodes
    in ``columns`` (name -> flat positions that have an alpha, None: all), or None where the
    graph before ``start`` is not a chain of affine nodes (with a backward rule) and S-shaped
    activations, or an activation's planes or the box are not finite. ``planes``: the
    (intermediates, cache) whose default planes to take (cast to ``inter``'s dtype; default:
    ``inter`` and ``cache``)."""
    nodes = chain(inter.graph, start)
    if nodes is None or not isinstance(coef, torch.Tensor):
        return None
    steps = []
    for node in nodes:
        rule = rules().get(node.op)
        if node.op in GUIDE_OPS:
            step = _sshape_step(inter, planes or (inter, cache), node, rule,
                                columns.get(node.name), node.name in columns)
        else:
            step = _affine_step(inter, node, rule)
        if step is None:
            return None
        steps.append((step, inter.deltas.get(node.name), node.name in columns))
    box = inter.bounds[inter.graph.inputs[0].name]
    if not (bool(torch.isfinite(box.lower).all()) and bool(torch.isfinite(box.upper).all())):
        return None
    with torch.no_grad():  # the steps before the first alpha, once
        a = coef
        const = torch.zeros(coef.shape[:2], device=coef.device, dtype=coef.dtype)
        while steps and not steps[0][2]:
            step, delta, _ = steps.pop(0)
            if delta is not None:
                const = const - _spec_dot(a.abs(), delta)
            a, offset = step(a, {})
            if offset is not None:
                const = const + offset
    return ChainGuide(a, const, [s[:2] for s in steps],
                      ((box.lower + box.upper) / 2, (box.upper - box.lower) / 2))
