"""Backward steps on window coefficients (``patches.Patches``) for the ops that keep them
windowed: elementwise relaxations, Conv, unpadded AveragePool, Add/Sub/Neg of same-shape
operands. Any other op, or a window grown past ``patches.DENSE_SHARE`` of its value, goes
dense (the caller's dense step); both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bounds.engine import adjoint_precision, patches
from bounds.engine.box_dot import box_lower
from bounds.engine.constants import as_tensor
from bounds.engine.patches import Patches
from bounds.engine.results import Intermediates
from bounds.graph import Node, conv_like
from bounds.registry import rules
from bounds.types import Interval

Coef = torch.Tensor | Patches
Step = tuple[list, torch.Tensor | None]


def dense(c: Coef) -> torch.Tensor:
    return c.to_dense() if isinstance(c, Patches) else c


def start(graph, name: str, coef: Coef) -> Coef:
    """The start coefficients as windows when they are spatially sparse rows of a value that
    some Conv of the graph takes (one-hot neuron rows of intermediate bounds), else as is
    (windows given by the caller stay windows)."""
    if isinstance(coef, Patches):
        return coef
    spatial = conv_like(graph, name)
    if not spatial:
        return coef
    p = patches.from_dense(coef, graph.shape_of(name), spatial)
    return coef if p is None else p


def accumulate(pending: dict, name: str, c: Coef) -> None:
    """pending[name] += c (windows merged where their offsets allow, else dense)."""
    old = pending.get(name)
    if old is None:
        pending[name] = c
        return
    if isinstance(old, Patches) and isinstance(c, Patches):
        merged = patches.add(old, c)
        if merged is not None:
            pending[name] = merged
            return
    pending[name] = dense(old) + dense(c)


def concretize(a: Coef, box: Interval) -> torch.Tensor:
    """Lower bound [B, S] of a . x over the box (dense or window coefficients)."""
    if isinstance(a, Patches):
        return patches.concretize(a, box.lower, box.upper)
    return box_lower(a, box.lower, box.upper)


def _keep_small(p: Patches) -> Coef:
    return p if patches.small(p) else p.to_dense()


def has_offset(offset: torch.Tensor) -> bool:
    """Whether a plane's ``offset`` adds to the bound: it depends on alpha (its gradient
    counts), or some entry is nonzero. A constant all-zero offset (ReLU's lower planes, alpha
    or not) adds exact zeros: skipping its product and sum changes neither the bound nor
    its gradient."""
    return offset.requires_grad or bool(offset.any())


def _relaxed(a: Patches, rel, gap: torch.Tensor | None = None) -> Step:
    """A -> A+ lower_slope + A- upper_slope over the windows; offsets likewise. ``gap``:
    the plane upper_slope - lower_slope where the caller keeps it (one gather, no
    subtraction over the windows: the same numbers)."""
    v = a.values
    neg = v.clamp(max=0)
    offset = (neg * a.gather(rel.upper_offset)).flatten(2).sum(-1)
    if has_offset(rel.lower_offset):
        offset = offset + ((v - neg) * a.gather(rel.lower_offset)).flatten(2).sum(-1)
    low = a.gather(rel.lower_slope)
    gap = a.gather(rel.upper_slope) - low if gap is None else a.gather(gap)
    return [a.with_values(torch.addcmul(v * low, neg, gap))], offset


def _conv(inter: Intermediates, node: Node, a: Patches, work: torch.dtype | None = None
          ) -> Step | None:
    """The Conv's window step; with a ``work`` dtype its transposed convolution runs in it
    and the offset is left to the caller (crown's float32 adjoints)."""
    if node.inputs[1] is not None or len(node.dynamic_inputs) != 1:
        return None
    dtype = inter.dtype if work is None else work
    w = as_tensor(node.consts[1], inter.device, dtype)
    if w.dim() - 2 != a.spatial:
        return None
    bias = node.consts.get(2)
    bias = None if bias is None or work is not None else as_tensor(bias, inter.device, dtype)
    source = a if work is None else a.with_values(adjoint_precision.work_cast(node, a.values, work))
    q, offset = patches.conv_step(source, w, node.attrs, inter.graph.shape_of(node.inputs[0]),
                                  bias)
    if work is not None:
        q = q.with_values(q.values.to(a.values.dtype, memory_format=torch.contiguous_format))
    return [_keep_small(q)], offset


def _avg_pool(inter: Intermediates, node: Node, a: Patches) -> Step | None:
    if len(node.attrs["kernel_shape"]) != a.spatial:
        return None
    q = patches.avg_pool_step(a, node.attrs, inter.graph.shape_of(node.inputs[0]))
    return None if q is None else ([_keep_small(q)], None)


def _add_sub(inter: Intermediates, node: Node, a: Patches) -> Step | None:
    sign = -1.0 if node.op == "Sub" else 1.0
    coefs, offset = [], None
    for pos, name in enumerate(node.inputs):
        s = sign if pos == 1 else 1.0
        if name is None:
            const = as_tensor(node.consts[pos], inter.device, inter.dtype)
            if const.dim() != len(node.shape):
                return None
            term = a.dot(const.unsqueeze(0)) * s
            offset = term if offset is None else offset + term
        elif inter.graph.shape_of(name) != node.shape:
            return None  # a broadcast operand: its coefficients sum over axes (dense step)
        else:
            coefs.append(a if s == 1.0 else a.with_values(-a.values))
    return coefs, offset


def _neg(inter: Intermediates, node: Node, a: Patches) -> Step | None:
    return [a.with_values(-a.values)], None


_STEPS: dict[str, Callable] = {"Conv": _conv, "AveragePool": _avg_pool, "Add": _add_sub,
                               "Sub": _add_sub, "Neg": _neg}


def window_step(inter: Intermediates, node: Node, a: Patches, relaxation: Callable,
                work: torch.dtype | None = None) -> Step | None:
    """(coefficients per dynamic input, offset [B, S] or None) of ``node``'s backward step on
    windows; None: no window step here (the caller makes ``a`` dense and takes its own).
    ``relaxation(node, rule)``: the node's planes (None: concretise) and their slope gap
    plane, or None for it. ``work``: the dtype of a Conv's adjoint (``adjoint_precision``;
    None: the pass's)."""
    rule = rules().get(node.op, node.name)
    if rule.relax is not None and rule.traits.elementwise:
        rel, gap = relaxation(node, rule)
        return None if rel is None else _relaxed(a, rel, gap)
    if node.op == "Conv":
        return _conv(inter, node, a, work)
    step = _STEPS.get(node.op)
    return None if step is None else step(inter, node, a)
