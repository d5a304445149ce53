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
float32: about 22 ms per iteration (forward and gradient) against 36 ms for the engine pass
(session 13; the S-shaped steps now live in ``guide_steps``: each sign-selected, with the node's
rounding allowances folded into its offsets and kept across the guides of one bound pass; the
affine steps after the last activation are one matrix, ``_Tail``).

The guide's number is never a bound: it leaves out the planes' rounding margins (and the
engine's allowances for float32 adjoints) and computes in whatever dtype it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from bounds.engine.constants import node_args
from bounds.engine.guide_steps import Step, _kept_sshape_step, tangent_batches
from bounds.engine.results import Intermediates, PassCache
from bounds.graph import conv_like
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from bounds.rules.s_shaped import GUIDE_OPS


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


def _times(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """a [B, S, n] @ m [1 or B, n, k]: one matrix product where B = 1 (a batched one is
    ~15% slower on CPU)."""
    if a.shape[0] == 1 and m.shape[0] == 1:
        return torch.mm(a[0], m[0]).unsqueeze(0)
    return torch.matmul(a, m)


class _Tail(torch.autograd.Function):
    """(a [B, S, n]) -> a . v - |a M| . r [B, S]: the affine steps after the chain's last
    activation as one matrix M [1 or B, n, k] (their offsets and the box's centre folded into
    v [B, n]) and the box's radius r [B, k], with its backward written out (one product with
    M's transpose m_t; no [B, S, k] temporaries but |a M| and the signs)."""

    @staticmethod
    def forward(ctx, a, m, v, r, m_t):
        p = _times(a, m)
        out = torch.bmm(a, v.unsqueeze(-1)).squeeze(-1)
        out = out - torch.bmm(p.abs(), r.unsqueeze(-1)).squeeze(-1)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(p, m_t, v, r)
        return out

    @staticmethod
    def backward(ctx, g):
        p, m_t, v, r = ctx.saved_tensors
        # d|p| / dp = sign(p) (a subgradient at 0: the guide only steers)
        q = _times(torch.copysign(r.unsqueeze(1), p), m_t)
        return torch.sub(v.unsqueeze(1), q).mul_(g.unsqueeze(-1)), None, None, None, None


# Guides whose coefficients hold at most this many elements per value (domains x rows x the
# start's width) take the tangents of all their activations of one op in one call
# (``guide_steps.TangentBatch``). ERAN sigmoid 6x200: the 9-row final spec 0.195 -> 0.164 CPU s
# per alpha pass (min of 4, same run); the 400-row intermediate guides lost ~5% batched.
BATCH_ELEMENTS = 1 << 15


class ChainGuide:
    """Guide passes of coef . value(start) on a chain (module docstring): ``lower(alphas)``
    [B, S] for dense alphas ([B, S, *shape] per node). Build with :func:`chain_guide`."""

    def __init__(self, first: torch.Tensor, const: torch.Tensor, steps: list, input_box,
                 tail: tuple | None = None):
        self.first, self.const, self.steps = first, const, steps
        self.centre, self.radius = input_box
        self.tail = tail
        # (few rows: calls cost more than arithmetic, one batch of tangents per op pays;
        # many rows: the batch's copies and strided parts cost more than the calls saved)
        rows = first.shape[0] * first.shape[1]
        self.batches = (tangent_batches([st for st, _ in steps])
                        if rows * max(1, first[0, 0].numel()) <= BATCH_ELEMENTS else [])

    def lower(self, alphas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, S]; nodes missing from ``alphas`` take their default planes (``lower({})``:
        the guide's default pass)."""
        a, total = self.first, self.const
        tangents: dict = {}
        for batch in self.batches:
            tangents.update(batch.tangents(alphas) or {})
        for step, delta in self.steps:
            if delta is not None:
                total = total - _spec_dot(a.abs(), delta)
            a, offset = step(a, alphas, tangents) if hasattr(step, "kit") else step(a, alphas)
            if offset is not None:
                total = total + offset
        if self.tail is not None:
            return total + _Tail.apply(a.flatten(2), *self.tail)
        return total + _spec_dot(a, self.centre) - _spec_dot(a.abs(), self.radius)


def _fold_tail(steps: list, deltas: list, top_shape, centre: torch.Tensor,
               radius: torch.Tensor, like: torch.Tensor) -> tuple | None:
    """``_Tail``'s (M, v, r) for affine ``steps`` from a value of ``top_shape`` down to the
    input (``deltas``: their values' rounding allowances, below the top value; None where
    some is not None: |a| . delta inside is no matrix)."""
    if not steps or any(d is not None for d in deltas):
        return None
    n = math.prod(top_shape)
    a = torch.eye(n, dtype=like.dtype, device=like.device).reshape(1, n, *top_shape)
    offset = torch.zeros((1, n), dtype=like.dtype, device=like.device)
    with torch.no_grad():
        for step in steps:
            a, off = step(a, {})
            if off is not None:
                offset = offset + off
    m = a.flatten(2)
    b = centre.shape[0]
    c, r = centre.reshape(b, -1), radius.reshape(b, -1)
    if m.shape[0] not in (1, b) or m.shape[2] != c.shape[1]:
        return None
    v = offset.expand(b, n) + torch.matmul(m, c.unsqueeze(-1)).squeeze(-1)
    # (M's transpose for the backward, contiguous: ~15% faster products than a strided view)
    return m, v, r, m.transpose(1, 2).contiguous()


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
    deltas = [inter.deltas.get(node.name) for node in nodes]
    first = next((i for i, n in enumerate(nodes) if n.name in columns), len(nodes))
    for i, node in enumerate(nodes):
        rule = rules().get(node.op)
        if node.op in GUIDE_OPS:
            folded = (None, None)
            if i >= first and node.name in columns:  # (its allowances: in its planes)
                below = i + 1 < len(nodes) and nodes[i + 1].op not in GUIDE_OPS
                folded = (deltas[i], deltas[i + 1] if below else None)
                deltas[i] = None
                if below:
                    deltas[i + 1] = None
            step = _kept_sshape_step(inter, planes or (inter, cache), node, rule,
                                     columns.get(node.name), node.name in columns, folded,
                                     cache.guides)
        else:
            step = _affine_step(inter, node, rule)
        if step is None:
            return None
        steps.append((step, deltas[i], node.name in columns))
    box = inter.bounds[inter.graph.inputs[0].name]
    if not (bool(torch.isfinite(box.lower).all()) and bool(torch.isfinite(box.upper).all())):
        return None
    centre, radius = (box.lower + box.upper) / 2, (box.upper - box.lower) / 2
    with torch.no_grad():  # the steps before the first alpha, once
        a = coef
        const = torch.zeros(coef.shape[:2], device=coef.device, dtype=coef.dtype)
        while steps and not steps[0][2]:
            step, delta, _ = steps.pop(0)
            nodes.pop(0)
            if delta is not None:
                const = const - _spec_dot(a.abs(), delta)
            a, offset = step(a, {})
            if offset is not None:
                const = const + offset
    # the affine steps after the last activation: one matrix, built once
    cut = len(nodes)
    while cut > 1 and nodes[cut - 1].op not in GUIDE_OPS:
        cut -= 1
    tail = None
    if cut < len(nodes) and nodes[cut - 1].op in GUIDE_OPS:
        # (the same for every guide over these bounds: kept in the cache)
        key = ("guide_tail", nodes[cut].name, coef.dtype)
        kept = cache.guides.get(key)
        if kept is not None and kept[0] is box.lower and kept[1] is box.upper:
            tail = kept[2]
        else:
            tail = _fold_tail([s[0] for s in steps[cut:]], [s[1] for s in steps[cut + 1:]],
                              inter.graph.shape_of(nodes[cut].name), centre, radius, coef)
            cache.guides[key] = (box.lower, box.upper, tail)
    if tail is not None:  # (the top value's allowance stays a step's, unless folded)
        top = steps[cut][1]
        steps = steps[:cut] + ([] if top is None else
                               [((lambda a, alphas: (a, None)), top, False)])
    return ChainGuide(a, const, [s[:2] for s in steps], (centre, radius), tail)
