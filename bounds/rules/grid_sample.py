"""GridSample at an input-dependent grid: X [N, C, H, W] sampled at grid [N, Ho, Wo, 2].

Set by the importer (``verifier/onnx_import/converters/grid_sample.py``) where the grid
depends on the input (a constant grid becomes a Gather and a weighted sum there); attrs
``mode`` ("nearest" or "linear": cubic weights can be negative and are refused),
``padding_mode`` ("zeros", "border", "reflection") and ``align_corners`` (0/1).

An output is a tap of one pixel (nearest) or a convex combination of up to four (linear):
weights w >= 0 summing to 1, where a tap outside the image reads 0 under zeros padding.
So it lies in the hull of the pixels its coordinates can reach, and of 0 where a reachable
tap is outside. Per axis of size D, the grid value g in [gl, gu] maps increasingly to the
pixel coordinate c = (g + 1) (D - 1) / 2 (align_corners) or ((g + 1) D - 1) / 2; every tap
of a coordinate in [cl, cu] (widened by a margin for the runtime's float32 coordinates) is at
a pixel in floor(cl) .. floor(cu) + 1. Border padding clamps those to [0, D - 1]; reflection
leaves coordinates inside [0, D - 1] (align_corners) or [-1/2, D - 1/2] unchanged before
clamping, and otherwise may reach any pixel of the axis. IBP takes the min (max) of the
data's lower (upper) bounds over the reachable rectangle: a sparse table of window minima
along W, then a masked min over the rows.

float32: the runtime's weights are nonnegative and sum to 1 within a few roundings, and its
sum of at most 4 products rounds a few times more, so its value is within 2^-19 M of the
hull, M the largest magnitude in it; IBP widens both ends by that. CROWN concretises the
output by its interval (no backward: the engine's default for an op without one). The grid's
forward is torch's ``grid_sample``, whose conventions ONNX's GridSample adopted (the
importer's differential check compares it with onnxruntime). No alpha, split or MILP form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.types import Interval

_TORCH_MODE = {"linear": "bilinear", "nearest": "nearest"}
_PADDING = {"zeros": "zeros", "border": "border", "reflection": "reflection"}
# relative allowance of the runtime's float32 weights and sums (docstring)
_MARGIN = 2.0**-19
# elements of one [B, N, C, H, P] block of the row reduction
_BLOCK = 2**24


def _batched(x: torch.Tensor, is_const: bool, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """[batch, N, C, H, W] from the data (a constant has no batch axis)."""
    if is_const:
        return x.to(dtype).unsqueeze(0).expand(batch, *x.shape)
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else x


def _forward(node, args):
    x, grid = args[0], args[1]
    batch = grid.shape[0]
    x = _batched(x, node.is_const(0), batch, grid.dtype)
    b, n, c, h, w = x.shape
    _, _, ho, wo = node.shape
    y = F.grid_sample(x.reshape(b * n, c, h, w), grid.reshape(b * n, ho, wo, 2).to(x.dtype),
                      mode=_TORCH_MODE[node.attrs["mode"]],
                      padding_mode=_PADDING[node.attrs["padding_mode"]],
                      align_corners=bool(node.attrs["align_corners"]))
    return y.reshape(b, n, c, ho, wo)


def _coordinate(g: torch.Tensor, size: int, align: bool) -> torch.Tensor:
    return (g + 1) / 2 * (size - 1) if align else ((g + 1) * size - 1) / 2


def reachable(g_lo: torch.Tensor, g_hi: torch.Tensor, size: int, padding: str, align: bool):
    """For grid values in [g_lo, g_hi] along an axis of ``size`` pixels: (first, last) pixel
    indices the taps can read (long, first <= last) and a mask where a tap can read the zero
    outside the image (zeros padding; where no pixel is reachable, first = last = 0 and the
    mask is set: the output is 0)."""
    slack = 2.0**-12 * (size + 1)
    lo = torch.nan_to_num(_coordinate(g_lo.double(), size, align), nan=-torch.inf) - slack
    hi = torch.nan_to_num(_coordinate(g_hi.double(), size, align), nan=torch.inf) + slack
    first, last = torch.floor(lo), torch.floor(hi) + 1
    top = size - 1
    outside = torch.zeros_like(lo, dtype=torch.bool)
    if padding == "zeros":
        outside = (first < 0) | (last > top)
        empty = (last < 0) | (first > top)
        first = torch.where(empty, 0.0, first)
        last = torch.where(empty, 0.0, last)
    elif padding == "reflection":
        edge = 0.0 if align else 0.5
        inside = (lo >= -edge) & (hi <= top + edge)
        first = torch.where(inside, first, 0.0)
        last = torch.where(inside, last, float(top))
    first = first.clamp(0, top).long()
    last = torch.maximum(last.clamp(0, top).long(), first)
    return first, last, outside


def _col_table(x: torch.Tensor, reduce) -> tuple[torch.Tensor, int]:
    """Sparse table of window reductions along the last axis: [..., L * W], level j at
    position c holding reduce(x[..., c : c + 2^j]) (clamped at the end), and L."""
    levels = [x]
    span = 1
    while 2 * span <= x.shape[-1]:
        prev = levels[-1]
        shifted = torch.cat([prev[..., span:], prev[..., -1:].expand(
            *prev.shape[:-1], span)], -1)
        levels.append(reduce(prev, shifted))
        span *= 2
    return torch.cat(levels, -1), len(levels)


def _rect(x: torch.Tensor, rows, cols, reduce, fill: float) -> torch.Tensor:
    """reduce of x [B, N, C, H, W] over each output's rectangle rows [r0, r1] x cols
    [c0, c1] (each [B, N, P] long) -> [B, N, C, P]."""
    b, n, c, h, w = x.shape
    table, _ = _col_table(x, reduce)
    (r0, r1), (c0, c1) = rows, cols
    span = (c1 - c0 + 1).clamp(min=1)
    level = torch.floor(torch.log2(span.double())).long()
    # (a power of two read off log2 may be one level off at exact powers: fix both ways)
    level = torch.where((1 << (level + 1)) <= span, level + 1, level)
    level = torch.where((1 << level) > span, level - 1, level)
    left = level * w + c0
    right = level * w + (c1 - (1 << level) + 1)
    p = r0.shape[-1]
    out = []
    step = max(1, _BLOCK // max(1, b * n * c * h))
    hs = torch.arange(h, device=x.device)
    for s in range(0, p, step):
        sl = slice(s, min(p, s + step))
        k = sl.stop - sl.start
        picks = [torch.gather(table, -1, idx[:, :, None, None, sl].expand(b, n, c, h, k))
                 for idx in (left, right)]
        both = reduce(*picks)  # [B, N, C, H, k]
        in_rows = ((hs[None, None, :, None] >= r0[:, :, None, sl])
                   & (hs[None, None, :, None] <= r1[:, :, None, sl]))  # [B, N, H, k]
        both = torch.where(in_rows[:, :, None], both, torch.full_like(both, fill))
        out.append(both.amin(3) if fill > 0 else both.amax(3))
    return torch.cat(out, -1)


def _ibp(node, args):
    x, grid = args[0], args[1]
    g_lo, g_hi = grid.lower, grid.upper
    batch = g_lo.shape[0]
    if node.is_const(0):
        lo = hi = _batched(x, True, batch, g_lo.dtype)
    else:
        lo = _batched(x.lower, False, batch, g_lo.dtype)
        hi = _batched(x.upper, False, batch, g_lo.dtype)
    b, n, c, h, w = lo.shape
    _, _, ho, wo = node.shape
    padding, align = node.attrs["padding_mode"], bool(node.attrs["align_corners"])
    g_lo, g_hi = g_lo.reshape(b, n, ho * wo, 2), g_hi.reshape(b, n, ho * wo, 2)
    c0, c1, out_c = reachable(g_lo[..., 0], g_hi[..., 0], w, padding, align)
    r0, r1, out_r = reachable(g_lo[..., 1], g_hi[..., 1], h, padding, align)
    lower = _rect(lo, (r0, r1), (c0, c1), torch.minimum, torch.inf)
    upper = _rect(hi, (r0, r1), (c0, c1), torch.maximum, -torch.inf)
    zero = (out_c | out_r)[:, :, None, :]  # [B, N, 1, P]
    lower = torch.where(zero, lower.clamp(max=0.0), lower)
    upper = torch.where(zero, upper.clamp(min=0.0), upper)
    margin = _MARGIN * torch.maximum(lower.abs(), upper.abs())
    shape = (b, n, c, ho, wo)
    return Interval((lower - margin).reshape(shape), (upper + margin).reshape(shape))


RULES = (
    OpRule("GridSample", forward=_forward, ibp=_ibp, traits=OpTraits(),
           doc="sampling at an input-dependent grid (nearest, linear): hull of reachable pixels",
           alpha=None, rounding=Rounding.EXACT, split=None, milp=Milp("none")),
)
