"""Guide passes for alpha-CROWN's iterations on chains of affine nodes and S-shaped activations.

alpha-CROWN's loop only picks alphas (``work_dtype``): every alpha in range gives a sound bound,
and the bound reported is one pass of the engine (``crown.backward_bound``) with the alphas
found. So the loop's own passes may be computed any way that tracks that pass closely: here,
on a chain ``input -> affine -> S-shape -> affine -> ... -> start`` (MLPs such as ERAN's
sigmoid nets), a pass built once per optimisation with everything that does not depend on
alpha taken out of the loop (each activation's default planes, f(l), f(u), which planes alpha
moves, the box's centre and radius, the steps before the first alpha), and per iteration only
the tangent planes (``s_shaped.guide_tangents``: four points, no allowances) and the
coefficient algebra, with alphas dense over each value (positions without one keep the default
planes through a 0/1 mask, so no gathers or scatters). ERAN sigmoid 6x200, one layer's 400
intermediate rows: a third of the engine pass's time per iteration.

The guide's number is never a bound: it leaves out the planes' rounding margins and computes
in whatever dtype it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from bounds.engine.constants import node_args
from bounds.engine.crown import default_relaxation
from bounds.engine.results import Intermediates, PassCache
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from bounds.rules.s_shaped import GUIDE_OPS, guide_tangents

Step = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]]


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


def _sshape_step(inter: Intermediates, cache: PassCache, node, rule,
                 positions: torch.Tensor | None, has_alpha: bool) -> Step | None:
    """The step through S-shaped ``node``: the default planes, and where the node has an
    alpha (at ``positions``, flat indices; None: all) its tangent planes on the side(s) that
    alpha moves (lower where l < 0, upper where u > 0: the others are chords)."""
    rel = default_relaxation(inter, cache, node, rule)
    if rel is None:
        return None
    x = inter.bounds[node.dynamic_inputs[0]]
    full = x.lower.shape
    lo_s, lo_o, up_s, up_o = _planes(rel, full)
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
    fl, fu = rule.forward(node, [l]), rule.forward(node, [u])
    kit = _SKit(node.op, l, u, fl, fu, (lo_s, lo_o, up_s, up_o), mask * (l < 0), mask * (u > 0))
    name = node.name

    def moving(a, alphas):
        new, offset = _SStep.apply(a, alphas[name], kit)
        return new, offset

    return moving


@dataclass(frozen=True)
class _SKit:
    """What an S-shaped node's guide step reads ([B, 1, *shape] each): its input bounds and
    f there, its default planes, and 0/1 masks of the positions whose lower / upper plane
    alpha moves (tangent where l < 0 / u > 0; chords elsewhere are the default planes)."""

    op: str
    l: torch.Tensor
    u: torch.Tensor
    fl: torch.Tensor
    fu: torch.Tensor
    planes: tuple
    m_lo: torch.Tensor
    m_up: torch.Tensor


def _above(x: torch.Tensor) -> torch.Tensor:
    return (x * 1e30).clamp_(0.0, 1.0)


class _SStep(torch.autograd.Function):
    """(a [B, S, *shape], alpha) -> (a+ s_lo + a- s_up, sum a+ o_lo + a- o_up [B, S]) through
    an S-shaped node's planes (alpha's tangents where the kit's masks say, the default planes
    elsewhere), with its backward written out: a few arithmetic passes over [B, S, *shape]
    and no boolean tensors (autograd's min/max/where masks cost more than the step)."""

    @staticmethod
    def forward(ctx, a, alpha, kit: _SKit):
        tan = guide_tangents(kit.op, alpha.detach(), kit.l, kit.u, kit.fl, kit.fu)
        lo_s, lo_o, up_s, up_o = kit.planes
        s_lo = torch.addcmul(lo_s, kit.m_lo, tan.slope - lo_s)
        s_up = torch.addcmul(up_s, kit.m_up, tan.slope - up_s)
        o_lo = torch.addcmul(lo_o, kit.m_lo, tan.lower - lo_o)
        o_up = torch.addcmul(up_o, kit.m_up, tan.upper - up_o)
        pos = a.clamp(min=0)
        neg = a - pos
        new = torch.addcmul(pos * s_lo, neg, s_up)
        offset = torch.addcmul(pos * o_lo, neg, o_up).flatten(2).sum(-1)
        ctx.save_for_backward(_above(a), pos * kit.m_lo, neg * kit.m_up, s_lo, s_up, o_lo,
                              o_up, tan.x_lower, tan.x_upper, tan.dslope)
        return new, offset

    @staticmethod
    def backward(ctx, g_new, g_off):
        up, pm, nm, s_lo, s_up, o_lo, o_up, x_lo, x_up, dslope = ctx.saved_tensors
        g_off = g_off.reshape(*g_off.shape, *([1] * (g_new.dim() - 2)))
        g_pos = torch.addcmul(g_new * s_lo, g_off, o_lo)
        g_neg = torch.addcmul(g_new * s_up, g_off, o_up)
        g_a = torch.addcmul(g_neg, up, g_pos - g_neg)
        g_t = torch.addcmul(pm * torch.addcmul(g_new, g_off, x_lo, value=-1), nm,
                            torch.addcmul(g_new, g_off, x_up, value=-1))
        return g_a, g_t * dslope, None


def _spec_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(-1)


def chain(graph, start: str) -> list | None:
    """The nodes from ``start`` back to the input, in backward order, when they form a chain
    the guide takes (every node before ``start`` on it, each with one dynamic input, affine
    with a backward rule or S-shaped); else None."""
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
                columns: Mapping[str, torch.Tensor | None]) -> ChainGuide | None:
    """The guide of coef [B, S, *shape(start)] . value(start) under dense alphas of the nodes
    in ``columns`` (name -> flat positions that have an alpha, None: all), or None where the
    graph before ``start`` is not a chain of affine nodes (with a backward rule) and S-shaped
    activations, or an activation's planes or the box are not finite."""
    nodes = chain(inter.graph, start)
    if nodes is None or not isinstance(coef, torch.Tensor):
        return None
    steps = []
    for node in nodes:
        rule = rules().get(node.op)
        if node.op in GUIDE_OPS:
            step = _sshape_step(inter, cache, node, rule, columns.get(node.name),
                                node.name in columns)
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
