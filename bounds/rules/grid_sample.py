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

float32 (``Rounding.SAMPLING``, ``sampling_error``): the runtime computes coordinates in
float32, off by up to a few u (size + 1) pixels, so each linear weight moves by up to twice
that; its weights stay nonnegative and sum to 1 within a few roundings, and its sum of at
most 4 products rounds a few times more. Its value is thus within (8 (size + 1) + 8) u M of
the exact one at the same inputs, M the largest magnitude of the pixels the taps can reach
(the hull's ends): the allowance the engines add, which the differential check also reads.
The hull itself already holds any convex combination of the reachable pixels.

CROWN (``_backward``): where the coordinates an output can take reach at most 3 taps per axis
(linear; 2 for nearest), y = sum_k w_k x_k with each weight in an interval read off the tent
(or the pick) over the coordinate range; the weights' midpoints become the image's
coefficients and their radii times the taps' magnitudes the offset. Other outputs are
concretised by their interval; the grid gets no coefficient. The forward is torch's
``grid_sample``, whose conventions ONNX's GridSample adopted (the importer's differential
check compares it with onnxruntime). No alpha, split or MILP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.rules.common import batched_data, interval_offset
from bounds.types import Interval

_TORCH_MODE = {"linear": "bilinear", "nearest": "nearest"}
_PADDING = {"zeros": "zeros", "border": "border", "reflection": "reflection"}
U32 = 2.0**-24
# elements of one [B, N, C, H, P] block of the row reduction
_BLOCK = 2**24


def _forward(node, args):
    x, grid = args[0], args[1]
    batch = grid.shape[0]
    x = batched_data(node, x, batch, grid.dtype)
    b, n, c, h, w = x.shape
    _, _, ho, wo = node.shape
    y = F.grid_sample(x.reshape(b * n, c, h, w), grid.reshape(b * n, ho, wo, 2).to(x.dtype),
                      mode=_TORCH_MODE[node.attrs["mode"]],
                      padding_mode=_PADDING[node.attrs["padding_mode"]],
                      align_corners=bool(node.attrs["align_corners"]))
    return y.reshape(b, n, c, ho, wo)


def _coordinate(g: torch.Tensor, size: int, align: bool) -> torch.Tensor:
    return (g + 1) / 2 * (size - 1) if align else ((g + 1) * size - 1) / 2


def coordinates(g_lo: torch.Tensor, g_hi: torch.Tensor, size: int, align: bool):
    """Float64 pixel coordinates [lo, hi] of grid values in [g_lo, g_hi], widened by 64 u of
    their magnitude: the runtime's float32 coordinate rounds about 3 times (NaN ends: the
    whole line)."""
    lo = torch.nan_to_num(_coordinate(g_lo.double(), size, align), nan=-torch.inf)
    hi = torch.nan_to_num(_coordinate(g_hi.double(), size, align), nan=torch.inf)
    slack = 64 * U32 * (lo.abs() + hi.abs() + size + 1)
    return lo - slack, hi + slack


def reachable(g_lo: torch.Tensor, g_hi: torch.Tensor, size: int, padding: str, align: bool):
    """For grid values in [g_lo, g_hi] along an axis of ``size`` pixels: (first, last) pixel
    indices the taps can read (long, first <= last) and a mask where a tap can read the zero
    outside the image (zeros padding; where no pixel is reachable, first = last = 0 and the
    mask is set: the output is 0)."""
    lo, hi = coordinates(g_lo, g_hi, size, align)
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


def _hull(node, args) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) [B, N, C, P] of the pixels (and zeros) each output's taps can reach."""
    x, grid = args[0], args[1]
    g_lo, g_hi = grid.lower, grid.upper
    batch = g_lo.shape[0]
    if node.is_const(0):
        lo = hi = batched_data(node, x, batch, g_lo.dtype)
    else:
        lo = batched_data(node, x.lower, batch, g_lo.dtype)
        hi = batched_data(node, x.upper, batch, g_lo.dtype)
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
    return lower, upper


def _ibp(node, args):
    lower, upper = _hull(node, args)
    shape = (lower.shape[0], *node.shape)
    return Interval(lower.reshape(shape), upper.reshape(shape))


def _window_taps(node, g_lo: torch.Tensor, g_hi: torch.Tensor, size: int):
    """Along one axis: (pixel index [..., T] of each tap a coordinate in the grid's box can
    use, its weight's bounds [..., T] low and high, mask [...] of outputs whose taps fit in
    T). Linear: T = 3 taps from floor(lo), the tent max(0, 1 - |c - t|) bounded over [lo, hi]
    (its max at the point nearest t, its min at an end: the tent is unimodal). Nearest: T = 2
    taps from the first pick, weight 1 where only one pick is possible, else in [0, 1]. Taps
    outside the image get weight 0 under zeros padding (they read 0); border padding clamps
    the coordinates to [0, size - 1] first, as the runtime does; under reflection padding only
    coordinates inside [0, size - 1], which it leaves alone, are taken (taps past the edge
    then have weight 0)."""
    lo, hi = coordinates(g_lo, g_hi, size, bool(node.attrs["align_corners"]))
    padding = node.attrs["padding_mode"]
    if padding == "border":  # the runtime clamps the coordinate itself: so do we
        lo, hi = lo.clamp(0, size - 1), hi.clamp(0, size - 1)
    if node.attrs["mode"] == "nearest":
        first, last = torch.ceil(lo - 0.5), torch.floor(hi + 0.5)
        taps = first.unsqueeze(-1) + torch.arange(2, dtype=lo.dtype)
        fits = last - first <= 1
        alone = (first == last).unsqueeze(-1)
        w_hi = (taps <= last.unsqueeze(-1)).to(lo.dtype)
        w_lo = torch.where(alone, w_hi, torch.zeros_like(w_hi))
    else:
        first = torch.floor(lo)
        taps = first.unsqueeze(-1) + torch.arange(3, dtype=lo.dtype)
        fits = torch.floor(hi) - first <= 1
        l, h = lo.unsqueeze(-1), hi.unsqueeze(-1)
        gap = torch.maximum(torch.maximum(l - taps, taps - h), torch.zeros_like(taps))
        w_hi = (1 - gap).clamp(0, 1)
        w_lo = torch.minimum((1 - (l - taps).abs()).clamp(0, 1), (1 - (h - taps).abs()).clamp(0, 1))
    fits = fits & torch.isfinite(lo) & torch.isfinite(hi)
    if padding == "reflection":
        fits = fits & (lo >= 0) & (hi <= size - 1)
    inside = (taps >= 0) & (taps <= size - 1)
    w_lo, w_hi = torch.where(inside, w_lo, 0.0), torch.where(inside, w_hi, 0.0)
    return torch.where(inside, taps, 0.0).long(), w_lo, w_hi, fits


def _backward(node, coef, args, alpha=None):
    """Where an output's taps fit a small window (``_window_taps``, both axes):
    y = sum_k w_k x_k with w_k in [wl_k, wu_k], so a y >= a sum_k m_k x_k - |a| sum_k r_k M_k,
    m the weights' midpoints, r their radii and M_k the tap's largest magnitude; every other
    output (and every output of a constant image) is concretised by its interval."""
    lower, upper = _hull(node, args)
    b_s = coef.shape[:2]
    a = coef.reshape(*b_s, *node.shape[:2], -1)  # [B, S, N, C, P]
    if node.is_const(0):
        return [None, None], interval_offset(a, lower, upper)
    x, grid = args
    bsz = max(a.shape[0], x.lower.shape[0], grid.lower.shape[0])
    _, _, h, w = x.lower.shape[1:]
    n = node.shape[0]
    g_lo = grid.lower.expand(bsz, *grid.lower.shape[1:]).reshape(bsz, n, -1, 2)
    g_hi = grid.upper.expand(bsz, *grid.upper.shape[1:]).reshape(bsz, n, -1, 2)
    cx, wxl, wxu, fx = _window_taps(node, g_lo[..., 0], g_hi[..., 0], w)
    cy, wyl, wyu, fy = _window_taps(node, g_lo[..., 1], g_hi[..., 1], h)
    fixed = fx & fy  # [B, N, P]
    # the t x t taps: pixel index and weight bounds [B, N, P, T] (nonnegative products)
    pixel = (cy.unsqueeze(-1) * w + cx.unsqueeze(-2)).flatten(-2)
    w_lo = (wyl.unsqueeze(-1) * wxl.unsqueeze(-2)).flatten(-2)
    w_hi = (wyu.unsqueeze(-1) * wxu.unsqueeze(-2)).flatten(-2)
    mid, rad = _in_dtype((w_lo + w_hi) / 2, (w_hi - w_lo) / 2, coef.dtype)
    xl = x.lower.expand(bsz, *x.lower.shape[1:]).reshape(bsz, n, -1, h * w)  # [B, N, C, HW]
    xu = x.upper.expand(bsz, *x.upper.shape[1:]).reshape(bsz, n, -1, h * w)
    mag = torch.maximum(xl.abs(), xu.abs())
    p, t2 = pixel.shape[-2:]
    taps = pixel.reshape(bsz, n, 1, p * t2).expand(-1, -1, mag.shape[2], -1)
    tap_mag = torch.gather(mag, -1, taps).reshape(*mag.shape[:3], p, t2)  # [B, N, C, P, T]
    spread = (rad.unsqueeze(2) * tap_mag).sum(-1)  # [B, N, C, P]
    keep = fixed.unsqueeze(2).to(coef.dtype)  # [B, N, 1, P]
    a_cell = a * keep.unsqueeze(1)
    offset = interval_offset(a * (1 - keep.unsqueeze(1)), lower, upper) - (
        a_cell.abs() * spread.to(coef.dtype).unsqueeze(1)).flatten(2).sum(-1)
    # the midpoints' coefficients scattered onto the pixels the taps read
    data = torch.zeros(*a.shape[:4], h * w, dtype=coef.dtype, device=coef.device)
    for k in range(pixel.shape[-1]):
        contrib = a_cell * mid[..., k].unsqueeze(1).unsqueeze(3)  # [B, S, N, C, P]
        index = pixel[..., k].unsqueeze(1).unsqueeze(3).expand_as(contrib)
        data.scatter_add_(-1, index, contrib)
    return [data.reshape(*b_s, *x.lower.shape[1:]), None], offset


def _in_dtype(mid: torch.Tensor, rad: torch.Tensor, dtype: torch.dtype):
    """Midpoints and radii (float64) in the pass's dtype, the radius grown by the midpoint's
    rounding and rounded up, so [mid - rad, mid + rad] still holds every weight."""
    if dtype == mid.dtype:
        return mid, rad
    from bounds.engine.rounding import float32_above

    low = mid.to(dtype)
    rad = rad + (mid - low.to(mid.dtype)).abs()
    return low, (float32_above(rad) if dtype == torch.float32 else rad.to(dtype))


def sampling_error(node, args) -> torch.Tensor | None:
    """How far the runtime's float32 value may be from the exact one (module docstring);
    None for nearest, which selects a pixel and rounds nothing."""
    if node.attrs["mode"] == "nearest":
        return None
    lower, upper = _hull(node, args)
    size = max(_image_size(node, args))
    magnitude = torch.maximum(lower.abs(), upper.abs())
    return ((8 * (size + 1) + 8) * U32 * magnitude).reshape(lower.shape[0], *node.shape)


def _image_size(node, args) -> tuple[int, int]:
    x = args[0]
    data = x if node.is_const(0) else x.lower
    return int(data.shape[-2]), int(data.shape[-1])


RULES = (
    OpRule("GridSample", forward=_forward, ibp=_ibp, backward=_backward, traits=OpTraits(),
           doc="sampling at an input-dependent grid (nearest, linear): hull of reachable pixels",
           alpha=None, rounding=Rounding.SAMPLING, split=None, milp=Milp("none")),
)
