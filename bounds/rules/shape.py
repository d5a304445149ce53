"""Shape ops: they only move, copy or select elements (Pad may add a constant), so they are
affine and monotone: IBP applies the op to both ends; CROWN's backward step is the op's adjoint,
written directly (no autograd VJP of ``forward``).

Attributes (set by the importer, axes refer to the static per-sample shape):
Reshape(); Transpose(perm); Concat(axis); Slice(axes, starts, ends, steps) with starts/ends
already clamped as ONNX does; Gather(axis) with non-negative constant indices in consts[1];
Expand() and Tile(repeats) on operands of the output rank; Pad(pads, mode, value) with ONNX
pad order over all static axes; Resize(indices): per axis, the source index of every output
position (nearest-neighbour resizing is a gather) or None to keep the axis.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from bounds.registry import OpRule, OpTraits, Rounding
from bounds.rules.common import (
    AFFINE_FIELDS,
    ibp_monotone,
    reduce_to_operand,
    static_shape,
    sum_to_batch_spec,
)

_SHAPE = OpTraits(affine=True, monotone=True)
# a permutation of coordinates, or a selection of distinct ones (Slice)
_MOVE = OpTraits(affine=True, monotone=True, box_preserving=True)


def _reshape(node, args):
    x = args[0]
    return x.reshape(x.shape[0], *node.shape)


def _transpose(node, args):
    return args[0].permute(0, *(int(p) + 1 for p in node.attrs["perm"]))


def _batch_size(node, args) -> int:
    for pos, a in enumerate(args):
        if not node.is_const(pos):
            return a.shape[0]
    raise ValueError(f"node {node.name} has no dynamic input")


def _concat(node, args):
    batch = _batch_size(node, args)
    parts = [a.expand(batch, *a.shape) if node.is_const(pos) else a for pos, a in enumerate(args)]
    return torch.cat(parts, dim=int(node.attrs["axis"]) + 1)


def _slice(node, args):
    x = args[0]
    a = node.attrs
    for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"], strict=True):
        dim = int(axis) + 1
        if step > 0:
            index = [slice(None)] * x.dim()
            index[dim] = slice(int(start), int(end), int(step))
            x = x[tuple(index)]
        else:
            idx = torch.arange(int(start), int(end), int(step), device=x.device)
            x = x.index_select(dim, idx)
    return x


def _gather(node, args):
    x, idx = args[0], args[1]
    out = x.index_select(int(node.attrs["axis"]) + 1, idx.reshape(-1).long())
    return out.reshape(x.shape[0], *node.shape)


def _expand(node, args):
    return args[0].expand(args[0].shape[0], *node.shape)


def _tile(node, args):
    return args[0].repeat(1, *(int(r) for r in node.attrs["repeats"]))


def _select_indices(x: torch.Tensor, per_axis) -> torch.Tensor:
    for axis, idx in enumerate(per_axis):
        if idx is not None:
            x = x.index_select(axis + 1, torch.as_tensor(idx, device=x.device, dtype=torch.long))
    return x


def pad_indices(size: int, begin: int, end: int, mode: str) -> np.ndarray:
    """Source index of every output position of an edge-, wrap- or reflect-padded axis.
    Negative pads crop first, and the padding then reads the cropped axis (onnxruntime's
    order: it matters for wrap, whose period is the cropped length)."""
    start = max(-begin, 0)
    kept = size - start - max(-end, 0)
    pos = np.arange(-max(begin, 0), kept + max(end, 0))
    if mode == "edge":
        return start + np.clip(pos, 0, kept - 1)
    if mode == "wrap":  # the axis read as a ring (torch's circular padding)
        return start + np.mod(pos, kept)
    if kept == 1:
        return start + np.zeros_like(pos)
    period = 2 * (kept - 1)
    pos = np.mod(pos, period)
    return start + np.where(pos >= kept, period - pos, pos)


def _pad(node, args):
    x = args[0]
    pads = [int(p) for p in node.attrs["pads"]]
    rank = len(pads) // 2
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        torch_pads: list[int] = []
        for i in reversed(range(rank)):
            torch_pads += [pads[i], pads[i + rank]]
        return F.pad(x, torch_pads, value=float(node.attrs.get("value", 0.0)))
    per_axis = []
    for i in range(rank):
        if pads[i] == 0 and pads[i + rank] == 0:
            per_axis.append(None)
        else:
            per_axis.append(pad_indices(x.shape[i + 1], pads[i], pads[i + rank], mode))
    return _select_indices(x, per_axis)


def _resize(node, args):
    return _select_indices(args[0], node.attrs["indices"])


def _rule(op, forward, doc, backward=None, traits=_SHAPE):
    # data movement: nothing rounds, nothing to optimise or split, encoded exactly
    return OpRule(op, forward=forward, ibp=ibp_monotone(forward), traits=traits, doc=doc,
                  backward=backward, rounding=Rounding.EXACT, **AFFINE_FIELDS)


def _reshape_backward(node, coef, args):
    return [coef.reshape(*coef.shape[:2], *static_shape(args[0]))], None


def _index_map_backward(forward):
    """The adjoint of a data-movement op whose other inputs are constants: each output
    coefficient added to the input element it reads (``forward`` of the input's flat
    positions says which), without autograd's zero forward."""

    def backward(node, coef, args):
        in_shape = static_shape(args[0])
        numel = math.prod(in_shape)
        positions = torch.arange(numel, device=coef.device).reshape(1, *in_shape)
        read = forward(node, [positions, *args[1:]]).reshape(-1)
        lead = coef.shape[:2]
        spread = torch.zeros((*lead, numel), dtype=coef.dtype, device=coef.device).index_add(
            2, read, coef.reshape(*lead, -1))
        return [spread.reshape(*lead, *in_shape)] + [None] * (len(args) - 1), None

    return backward


_SLICE_BY_INDEX = _index_map_backward(_slice)
_PAD_BY_INDEX = _index_map_backward(_pad)


def _slice_backward(node, coef, args):
    """Positive steps: the coefficients written into zeros of the input's shape at the slice
    (one strided copy; the index map's index_add was 9 ms a step on cctsdb's 12296-value
    input); negative steps: the index map."""
    a = node.attrs
    if any(int(step) < 0 for step in a["steps"]):
        return _SLICE_BY_INDEX(node, coef, args)
    out = coef.new_zeros((*coef.shape[:2], *static_shape(args[0])))
    window = [slice(None)] * out.dim()
    for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"], strict=True):
        window[int(axis) + 2] = slice(int(start), int(end), int(step))
    out[tuple(window)] = coef
    return [out], None


def _concat_backward(node, coef, args):
    """Each dynamic input's part of the coefficients; a constant part adds A . c to the
    offset (what autograd's VJP and the zero forward's offset computed, without them)."""
    axis = int(node.attrs["axis"]) + 2
    coefs, offset, start = [], None, 0
    for pos, arg in enumerate(args):
        size = (arg.shape if node.is_const(pos) else static_shape(arg))[axis - 2]
        part = coef.narrow(axis, start, size)
        start += size
        if node.is_const(pos):
            term = sum_to_batch_spec(part * arg)
            offset = term if offset is None else offset + term
            coefs.append(None)
        else:
            coefs.append(part.contiguous())
    return coefs, offset


def _pad_backward(node, coef, args):
    """Constant mode: the coefficients of the cells read from the input, copied into its
    shape (a negative pad crops: the cells it drops get none), and value . (the padded
    cells' coefficients) in the offset; edge, wrap and reflect modes: the index map (each
    output cell reads one input cell)."""
    if node.attrs.get("mode", "constant") != "constant":
        return _PAD_BY_INDEX(node, coef, args)
    in_shape = static_shape(args[0])
    pads = [int(p) for p in node.attrs["pads"]]
    rank = len(pads) // 2
    read, written = [slice(None)] * 2, [slice(None)] * 2
    for i in range(rank):
        begin, end = pads[i], pads[i + rank]
        kept = in_shape[i] - max(-begin, 0) - max(-end, 0)
        read.append(slice(max(-begin, 0), max(-begin, 0) + kept))
        written.append(slice(max(begin, 0), max(begin, 0) + kept))
    out = coef.new_zeros((*coef.shape[:2], *in_shape))
    out[tuple(read)] = coef[tuple(written)]
    value = float(node.attrs.get("value", 0.0))
    if value == 0.0:
        return [out], None
    padded = torch.ones(coef.shape[2:], dtype=coef.dtype, device=coef.device)
    padded[tuple(written[2:])] = 0.0
    return [out], value * sum_to_batch_spec(coef * padded)


def _expand_backward(node, coef, args):
    """The coefficients summed over the axes the input is broadcast along."""
    return [reduce_to_operand(coef, static_shape(args[0]))], None


def _tile_backward(node, coef, args):
    """Each output axis of r copies of n cells read as (r, n): the copies' coefficients
    summed."""
    in_shape = static_shape(args[0])
    repeats = [int(r) for r in node.attrs["repeats"]]
    split = [size for r, n in zip(repeats, in_shape, strict=True) for size in (r, n)]
    copies = tuple(2 + 2 * i for i, r in enumerate(repeats) if r != 1)
    parts = coef.reshape(*coef.shape[:2], *split)
    return [(parts.sum(dim=copies) if copies else parts).reshape(*coef.shape[:2], *in_shape)
            ], None


def _transpose_backward(node, coef, args):
    """The inverse permutation of the coefficients (autograd's VJP of a zero forward cost
    7% of a Swin's intermediate pass)."""
    perm = [int(p) for p in node.attrs["perm"]]
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return [coef.permute(0, 1, *(2 + i for i in inverse)).contiguous()], None


RULES = (
    _rule("Reshape", _reshape, "reshape to the static shape", _reshape_backward, _MOVE),
    _rule("Transpose", _transpose, "permute axes", _transpose_backward, _MOVE),
    _rule("Concat", _concat, "concatenate along an axis", _concat_backward),
    _rule("Slice", _slice, "strided slice", _slice_backward, _MOVE),
    _rule("Gather", _gather, "select constant indices along an axis",
          _index_map_backward(_gather)),
    _rule("Expand", _expand, "broadcast to the static shape", _expand_backward),
    _rule("Tile", _tile, "repeat along each axis", _tile_backward),
    _rule("Pad", _pad, "pad with a constant, by reflection or by the edge value",
          _pad_backward),
    _rule("Resize", _resize, "nearest-neighbour resize (a gather per axis)",
          _index_map_backward(_resize)),
)
