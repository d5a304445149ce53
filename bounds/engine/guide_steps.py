"""The guide's steps through S-shaped activations (``guide.chain_guide``): the default planes,
alpha's tangent planes where the node has an alpha (``s_shaped.guide_tangents``), the node's
rounding allowances folded into its planes' offsets, and the written-out backward (``_SStep``).
Never a bound: see ``guide``'s module docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from bounds.engine.crown import default_relaxation
from bounds.engine.results import Intermediates
from bounds.rules.s_shaped import GuideTangents, guide_tangents

# a backward step: (coefficients, alphas) -> (input coefficients, offset [B, S] or None)
Step = Callable[[torch.Tensor, Mapping], tuple[torch.Tensor, torch.Tensor | None]]


def _planes(rel, shape) -> list[torch.Tensor]:
    return [t.reshape(shape).unsqueeze(1) for t in (rel.lower_slope, rel.lower_offset,
                                                     rel.upper_slope, rel.upper_offset)]


def _same_step(kept: tuple | None, ident: tuple, positions: torch.Tensor | None) -> bool:
    """Whether a kept S-shaped step was made from the same tensors (``ident``, compared by
    identity) and alpha positions (by value)."""
    if kept is None or len(kept[0]) != len(ident):
        return False
    if any(a is not b for a, b in zip(kept[0], ident, strict=True)):
        return False
    if (kept[1] is None) != (positions is None):
        return False
    return positions is None or (kept[1].shape == positions.shape
                                 and bool(torch.equal(kept[1], positions)))


def _kept_sshape_step(inter: Intermediates, planes: tuple, node, rule,
                      positions: torch.Tensor | None, has_alpha: bool, deltas: tuple,
                      store: dict) -> Step | None:
    """``_sshape_step``, kept in ``store`` (the guides' cache) for the next guide over the same
    bounds: the guides of successive intermediate values share every activation before
    them, with the same alpha positions."""
    rel = default_relaxation(*planes, node, rule)
    x = inter.bounds[node.dynamic_inputs[0]]
    ident = (x.lower, x.upper, rel, *deltas, has_alpha)
    key = ("guide_step", node.name, x.lower.dtype)
    kept = store.get(key)
    if _same_step(kept, ident, positions):
        return kept[2]
    step = _sshape_step(inter, planes, node, rule, positions, has_alpha, deltas)
    store[key] = (ident, positions, step)
    return step


def _sshape_step(inter: Intermediates, planes: tuple, node, rule,
                 positions: torch.Tensor | None, has_alpha: bool,
                 deltas: tuple = (None, None)) -> Step | None:
    """The step through S-shaped ``node``: the default planes, and where the node has an
    alpha (at ``positions``, flat indices; None: all) its tangent planes on the side(s) that
    alpha moves (lower where l < 0, upper where u > 0: the others are chords). ``deltas``:
    the rounding allowances of the node's output and input values that the step takes off
    itself (-|a| . delta before it, -|a'| . delta' after it; None: the caller's), for a node
    with an alpha folded into its planes' offsets (no passes of their own)."""
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
    d_out, d_in = (None if d is None else torch.broadcast_to(d.to(l.dtype), full).unsqueeze(1)
                   for d in deltas)
    kit = _SKit.build(node, rule, l, u, (lo_s, lo_o, up_s, up_o), mask, d_out, d_in)
    name = node.name
    gap_s, gap_o = up_s - lo_s, up_o - lo_o

    def moving(a, alphas, tangents=None):
        alpha = alphas.get(name)
        if alpha is None:  # (the default planes: the guide's default pass)
            neg = a.clamp(max=0)
            offset = _spec_sum(a * lo_o + neg * gap_o)
            if d_out is not None:
                offset = offset - _spec_dot_same(a.abs(), d_out)
            new = torch.addcmul(a * lo_s, neg, gap_s)
            if d_in is not None:
                offset = offset - _spec_dot_same(new.abs(), d_in)
            return new, offset
        return _SStep.apply(a, alpha, kit, None if tangents is None else tangents.get(name))

    moving.kit, moving.node = kit, name  # (the guide's batched tangents: tangent_batches)
    return moving


@dataclass(frozen=True)
class _SKit:
    """What an S-shaped node's guide step reads ([B, 1, *shape] each): its input bounds l and
    width w = u - l; 0/1 masks of the positions whose lower / upper plane alpha moves (tangent
    where l < 0 / u > 0; chords elsewhere are the default planes), as m_up and dm = m_lo -
    m_up; the default planes where alpha does not move them (0 where it does), as the upper
    ones and the lower minus the upper (a coefficient's sign picks lower or upper: upper +
    [a > 0] (lower - upper)); and at the positions ``cross`` where it moves both (in some
    domain: l < 0 < u) the masks, l, u, f(l), f(u) ([B, 1, k]). The rounding allowance of the
    node's output value is folded into the default offsets (-|a| delta_out: -delta_out on
    the lower plane, +delta_out on the upper); that of its input value, -|a S| delta_in =
    -a sign(a) S delta_in (S >= 0), is the step's (``in_delta``: -delta_in and 2 delta_in)."""

    op: str
    l: torch.Tensor
    w: torch.Tensor
    m_up: torch.Tensor
    dm: torch.Tensor
    fixed: tuple
    cross: torch.Tensor
    cross_masks: tuple
    ends: tuple
    in_delta: tuple | None

    @staticmethod
    def build(node, rule, l, u, planes, mask, d_out=None, d_in=None) -> _SKit:
        m_lo, m_up = mask * (l < 0), mask * (u > 0)
        lo_s, lo_o, up_s, up_o = planes
        lo_s, lo_o = lo_s * (1 - m_lo), lo_o * (1 - m_lo)
        up_s, up_o = up_s * (1 - m_up), up_o * (1 - m_up)
        if d_out is not None:
            lo_o, up_o = lo_o - d_out, up_o + d_out
        both = (m_lo * m_up).reshape(l.shape[0], -1)
        cross = (both > 0).any(0).nonzero().flatten()

        def at(t):
            return t.flatten(2).index_select(2, cross)

        ends = (at(l), at(u), at(rule.forward(node, [l])), at(rule.forward(node, [u])))
        return _SKit(node.op, l, u - l, m_up, m_lo - m_up, (up_s, lo_s - up_s, up_o, lo_o - up_o),
                     cross, (at(m_lo), at(m_up)), ends,
                     None if d_in is None else (-d_in, 2 * d_in))


def _above(x: torch.Tensor) -> torch.Tensor:
    """1 where x > 0 (up to 1e-30), else 0: no boolean tensor (comparisons and where cost
    several arithmetic passes over the same elements on CPU)."""
    return (x * 1e30).clamp_(0.0, 1.0)


class _SStep(torch.autograd.Function):
    """(a [B, S, *shape], alpha) -> (a S, sum a O [B, S]) through an S-shaped node's planes,
    S and O the slope and offset of the plane a's sign picks (lower where a > 0: alpha's
    tangents where the kit's masks say, the default planes elsewhere), with its backward
    written out: a few arithmetic passes over [B, S, *shape] (the crossing positions'
    corrections on those alone) and no boolean tensor."""

    @staticmethod
    def forward(ctx, a, alpha, kit: _SKit, tan=None):
        if tan is None:
            tan = guide_tangents(kit.op, alpha.detach(), kit.l, kit.w, kit.cross, kit.ends)
        up_s, d_s, up_o, d_o = kit.fixed
        up = _above(a)
        moving = torch.addcmul(kit.m_up, up, kit.dm)  # [a > 0] m_lo + [a <= 0] m_up
        slope = torch.addcmul(up_s, up, d_s).addcmul_(moving, tan.slope)
        at = torch.addcmul(up_o, up, d_o).addcmul_(moving, tan.at_d)
        point = tan.d  # (d offset / dt = -(a [moving] point))
        if kit.in_delta is not None:  # -|a S| delta_in: -sign(a) delta_in S into the offset
            signed = torch.addcmul(kit.in_delta[0], up, kit.in_delta[1])
            at.addcmul_(slope, signed, value=-1)
            point = point + signed
        new = a * slope
        offset = _spec_dot_same(a, at)
        # the crossing positions: the extremes' offsets and points beyond the tangent point
        m_lo_c, m_up_c = kit.cross_masks
        up_c = up.flatten(2).index_select(2, kit.cross)
        lo_fix, up_fix = m_lo_c * tan.lower_fix, m_up_c * tan.upper_fix
        fix = torch.addcmul(up_fix, up_c, lo_fix - up_fix)
        x_lo, x_up = m_lo_c * tan.x_lower_fix, m_up_c * tan.x_upper_fix
        x_fix = torch.addcmul(x_up, up_c, x_lo - x_up)
        a_c = a.flatten(2).index_select(2, kit.cross)
        offset = offset + (a_c * fix).sum(-1)
        ctx.save_for_backward(slope, at, a * moving, point, tan.dslope, fix, a_c * x_fix)
        ctx.cross = kit.cross
        return new, offset

    @staticmethod
    def backward(ctx, g_new, g_off):
        slope, at, moved, d, dslope, fix, x_fix = ctx.saved_tensors
        g_off_b = g_off.reshape(*g_off.shape, *([1] * (g_new.dim() - 2)))
        g_a = torch.addcmul(g_new * slope, g_off_b, at)
        g_a.flatten(2).index_add_(2, ctx.cross, g_off.unsqueeze(-1) * fix)
        # d new / dt = a [moving]; d offset / dt = -(a [moving] d + the crossing fixes)
        g_t = moved * torch.addcmul(g_new, g_off_b, d, value=-1)
        g_t.flatten(2).index_add_(2, ctx.cross, -g_off.unsqueeze(-1) * x_fix)
        return g_a, g_t.mul_(dslope), None, None


def _spec_dot_same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over positions of a * b (both [B, S, *shape]) -> [B, S]."""
    return (a * b).flatten(2).sum(-1)


def _spec_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).sum(-1)


class TangentBatch:
    """The tangent planes of several S-shaped nodes of one op in one call per pass
    (``guide_tangents`` on their positions side by side: the same arithmetic per position,
    a few calls instead of a few per node; what the many-node, few-row passes of a final
    spec spend their time on)."""

    def __init__(self, op: str, steps: list):
        kits = [st.kit for st in steps]
        self.op, self.names = op, [st.node for st in steps]
        self.shapes = [k.l.shape[2:] for k in kits]
        self.sizes = [k.l[0, 0].numel() for k in kits]
        self.l = torch.cat([k.l.flatten(2) for k in kits], dim=2)
        self.w = torch.cat([k.w.flatten(2) for k in kits], dim=2)
        first = 0
        cross = []
        for k, n in zip(kits, self.sizes, strict=True):
            cross.append(k.cross + first)
            first += n
        self.cross = torch.cat(cross)
        self.counts = [k.cross.numel() for k in kits]
        self.ends = tuple(torch.cat([k.ends[i] for k in kits], dim=2) for i in range(4))

    def tangents(self, alphas: Mapping[str, torch.Tensor]) -> dict | None:
        """name -> GuideTangents of each node (None: some node has no alpha here)."""
        if any(n not in alphas for n in self.names):
            return None
        a = torch.cat([alphas[n].detach().flatten(2) for n in self.names], dim=2)
        tan = guide_tangents(self.op, a, self.l, self.w, self.cross, self.ends)
        dense = [torch.split(x, self.sizes, dim=2) for x in (tan.d, tan.slope, tan.at_d,
                                                            tan.dslope)]
        fixes = [torch.split(x, self.counts, dim=2) for x in (
            tan.lower_fix, tan.upper_fix, tan.x_lower_fix, tan.x_upper_fix)]
        out = {}
        for i, (name, shape) in enumerate(zip(self.names, self.shapes, strict=True)):
            parts = [x[i].reshape(*x[i].shape[:2], *shape) for x in dense]
            out[name] = GuideTangents(*parts, *(x[i] for x in fixes))
        return out


def tangent_batches(steps: list) -> list[TangentBatch]:
    """One TangentBatch per op over the alpha-moved S-shaped steps of ``steps`` (ops with
    two such steps or more)."""
    by_op: dict[str, list] = {}
    for st in steps:
        if hasattr(st, "kit"):
            by_op.setdefault(st.kit.op, []).append(st)
    return [TangentBatch(op, group) for op, group in by_op.items() if len(group) > 1]
