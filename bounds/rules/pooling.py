"""Pooling and reductions: AveragePool, GlobalAveragePool, MaxPool, ReduceSum/Mean/Max.

AveragePool, GlobalAveragePool, ReduceSum, ReduceMean are fixed nonnegative linear maps
(affine and monotone: IBP is the map applied to both ends, exact for a box). MaxPool and
ReduceMax are monotone (IBP = max of lowers, max of uppers), not affine; their CROWN backward
relaxes each window's max linearly (``bounds.rules.max_relax``: lower plane a convex
combination of the window's inputs, upper plane the chord of max(x_j, second largest upper))
and maps the window coefficients back to input positions (index scatter; padding cells drop).

Pool attrs (set by the importer): kernel_shape, strides, dilations, ONNX-ordered ``pads`` and
``extra`` (zeros appended at the end of each spatial axis so ceil_mode windows are complete).
AveragePool divides the window sum by the number of counted cells: the padded cells count when
``count_include_pad``, the ``extra`` cells never do.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from bounds.registry import Alpha, Milp, OpRule, OpTraits, Rounding
from bounds.rules import max_relax
from bounds.rules.common import AFFINE_FIELDS, ibp_monotone, static_shape
from bounds.rules.floors import nonneg_reduce_floor
from bounds.types import Interval

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _torch_pads(begin, end) -> list[int]:
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        out += [int(b), int(e)]
    return out


def _merged(x: torch.Tensor, spatial: int) -> torch.Tensor:
    return x.reshape(-1, *x.shape[x.dim() - spatial - 1:])


def _pool_pads(a, spatial: int) -> tuple[list[int], list[int]]:
    pads = [int(p) for p in a["pads"]]
    begin = pads[:spatial]
    end = [pads[spatial + i] + int(a["extra"][i]) for i in range(spatial)]
    return begin, end


def _avg_forward(node, args):
    x = args[0]
    a = node.attrs
    spatial = len(a["kernel_shape"])
    xm = _merged(x, spatial)
    begin, end = _pool_pads(a, spatial)
    kernel, stride = tuple(a["kernel_shape"]), tuple(a["strides"])
    y = _AVG[spatial](F.pad(xm, _torch_pads(begin, end)), kernel, stride)
    pads = [int(p) for p in a["pads"]]
    if any(a["extra"]) or (any(pads) and not a["count_include_pad"]):
        ones = torch.ones((1, 1, *xm.shape[2:]), dtype=x.dtype, device=x.device)
        if a["count_include_pad"]:
            ones = F.pad(ones, _torch_pads(pads[:spatial], pads[spatial:]), value=1.0)
            mask = F.pad(ones, _torch_pads([0] * spatial, [int(e) for e in a["extra"]]))
        else:
            mask = F.pad(ones, _torch_pads(begin, end))
        y = y / _AVG[spatial](mask, kernel, stride)
    return y.reshape(x.shape[0], *node.shape)


_AVG_BACKWARD = {2: torch.ops.aten.avg_pool2d_backward, 3: torch.ops.aten.avg_pool3d_backward}


def _avg_backward(node, coef, args):
    """A -> A J for an unpadded AveragePool (no ceil-mode cells), in 2-D or 3-D: torch's own
    backward kernel of the pool, which autograd's VJP of ``_avg_forward`` calls (the same
    numbers, and the same gradient through it: its derivative is the pool), without the
    forward pass and the graph that the VJP builds. Others: None (the engine's VJP)."""
    a = node.attrs
    spatial = len(a["kernel_shape"])
    if (spatial not in _AVG_BACKWARD or any(int(p) for p in a["pads"])
            or any(int(e) for e in a["extra"])):
        return None, None
    in_shape = static_shape(args[0])
    rows = coef.reshape(-1, *coef.shape[coef.dim() - spatial - 1:])
    # (the kernel reads only the input's sizes: a broadcast zero stands for it)
    like = rows.new_zeros(()).expand(rows.shape[0], *in_shape[len(in_shape) - spatial - 1:])
    kernel = [int(k) for k in a["kernel_shape"]]
    grad = _AVG_BACKWARD[spatial](rows, like, kernel, [int(s) for s in a["strides"]],
                                  [0] * spatial, False, True, None)
    return [grad.reshape(*coef.shape[:2], *in_shape)], None


def _max_forward(node, args):
    x = args[0]
    a = node.attrs
    spatial = len(a["kernel_shape"])
    begin, end = _pool_pads(a, spatial)
    xm = F.pad(_merged(x, spatial), _torch_pads(begin, end), value=float("-inf"))
    y = _MAX[spatial](xm, tuple(a["kernel_shape"]), tuple(a["strides"]),
                      dilation=tuple(a["dilations"]))
    return y.reshape(x.shape[0], *node.shape)


def _global_avg(node, args):
    x = args[0]
    return x.mean(dim=tuple(range(3, x.dim())), keepdim=True)


def _global_avg_backward(node, coef, args):
    """Each coefficient spread over its channel's cells, divided by their count."""
    in_shape = static_shape(args[0])
    return [_spread(coef, in_shape, range(2, len(in_shape)), mean=True)], None


def _reduce(fn):
    def forward(node, args):
        x = args[0]
        axes = tuple(int(d) + 1 for d in node.attrs["axes"])
        if not axes:
            return x
        return fn(x, axes, bool(node.attrs["keepdims"]))

    return forward


def _reduce_backward(mean: bool):
    """The adjoint of a sum (mean) over axes: each coefficient copied to every reduced
    element (divided by their count), without autograd's zero forward."""

    def backward(node, coef, args):
        axes = sorted(int(d) for d in node.attrs["axes"])
        in_shape = static_shape(args[0])
        if not axes:
            return [coef], None
        if not node.attrs["keepdims"]:
            for a in axes:
                coef = coef.unsqueeze(a + 2)
        return [_spread(coef, in_shape, axes, mean)], None

    return backward


def _spread(coef, in_shape: tuple, axes, mean: bool) -> torch.Tensor:
    """``coef`` [B, S, *kept shape] (size 1 on the reduced ``axes``) copied over the input's
    ``in_shape``, divided by the reduced count for a mean."""
    spread = coef.expand(*coef.shape[:2], *in_shape)
    if mean:
        return spread / math.prod(in_shape[a] for a in axes)
    return spread.contiguous()


_reduce_sum = _reduce(lambda x, d, k: x.sum(dim=d, keepdim=k))
_reduce_mean = _reduce(lambda x, d, k: x.mean(dim=d, keepdim=k))
_reduce_max = _reduce(lambda x, d, k: x.amax(dim=d, keepdim=k))

@functools.lru_cache(maxsize=64)
def _window_index(in_sp: tuple, kernel: tuple, strides: tuple, dilations: tuple,
                  begin: tuple, end: tuple) -> torch.Tensor:
    """[O, K] flat input position of every window cell (padding cells: prod(in_sp))."""
    numel = math.prod(in_sp)
    padded = [b + n + e for b, n, e in zip(begin, in_sp, end, strict=True)]
    grid = torch.full(padded, numel, dtype=torch.long)
    inner = tuple(slice(b, b + n) for b, n in zip(begin, in_sp, strict=True))
    grid[inner] = torch.arange(numel).reshape(in_sp)
    for axis, (k, s, d) in enumerate(zip(kernel, strides, dilations, strict=True)):
        grid = grid.unfold(axis, (k - 1) * d + 1, s)
    spatial = len(in_sp)
    grid = grid[(Ellipsis, *(slice(None, None, d) for d in dilations))]
    out_sp = grid.shape[:spatial]
    return grid.reshape(math.prod(out_sp), -1)


def _pool_windows(node, x: Interval, upper: bool = True):
    """(index [O, K], lead size L, window lower/upper [B, L*O, K]) of a MaxPool node (upper
    None unless ``upper``: gathering a side costs a copy of the input's size per domain)."""
    a = node.attrs
    spatial = len(a["kernel_shape"])
    in_shape = tuple(x.lower.shape[1:])
    in_sp = in_shape[len(in_shape) - spatial:]
    begin, end = _pool_pads(a, spatial)
    idx = _window_index(in_sp, tuple(a["kernel_shape"]), tuple(a["strides"]),
                        tuple(a["dilations"]), tuple(begin), tuple(end)).to(x.lower.device)
    b, hw = x.lower.shape[0], math.prod(in_sp)
    lead = math.prod(in_shape) // hw
    pad = torch.full((b, lead, 1), -math.inf, dtype=x.lower.dtype, device=x.lower.device)

    def windows(t):
        return torch.cat([t.reshape(b, lead, hw), pad], -1)[:, :, idx].reshape(b, -1, idx.shape[1])

    return idx, lead, windows(x.lower), windows(x.upper) if upper else None


def _finite(x: Interval) -> bool:
    return bool(torch.isfinite(x.lower).all()) and bool(torch.isfinite(x.upper).all())


def _maxpool_backward(node, coef, args, alpha=None):
    """y = window max: window coefficients from ``max_relax``, scattered back to positions."""
    x = args[0]
    if not _finite(x):
        return None, None
    idx, lead, lo, up = _pool_windows(node, x)
    b, s = coef.shape[:2]
    hw = x.lower[0].numel() // lead
    if alpha is None:  # two cells per window (``max_relax.default_cells``)
        *parts, offset = max_relax.default_cells(coef.reshape(b, s, -1), lo, up)
        # window r = (l, o) reads cell idx[o, k] of lead slice l: flat l hw + idx[o, k]. The
        # chosen cells are never padding (-inf bounds are never the largest of a window with
        # finite cells), so no sentinel column: the sum is the input's layout as it stands.
        o = idx.shape[0]
        base = torch.arange(lead, device=idx.device).repeat_interleave(o) * hw
        reads = idx.repeat(lead, 1).unsqueeze(0).expand(lo.shape[0], -1, -1)  # [B, R, K]
        out = torch.zeros((b, s, lead * hw), dtype=coef.dtype, device=coef.device)
        for cell, value in parts:
            at = base + reads.gather(-1, cell.unsqueeze(-1)).squeeze(-1)  # [B, R]
            out.scatter_add_(-1, at.unsqueeze(1).expand(b, s, -1), value)
        return [out.view(b, s, *x.lower.shape[1:])], offset
    win, offset = max_relax.max_backward(coef.reshape(b, s, -1), lo, up, alpha)
    out = torch.zeros((b, s, lead, hw + 1), dtype=coef.dtype, device=coef.device)
    flat = idx.reshape(-1).expand(b, s, lead, -1)
    out = out.scatter_add(-1, flat, win.reshape(b, s, lead, -1))
    return [out[..., :hw].reshape(b, s, *x.lower.shape[1:])], offset


def _reduce_layout(node, shape: tuple):
    """(permutation of the batched input putting reduced axes last, kept sizes, K)."""
    axes = sorted(int(d) for d in node.attrs["axes"])
    kept = [i for i in range(len(shape)) if i not in axes]
    perm = [0] + [i + 1 for i in kept] + [i + 1 for i in axes]
    return perm, [shape[i] for i in kept], math.prod(shape[i] for i in axes)


def _reduce_windows(node, x: Interval):
    shape = tuple(x.lower.shape[1:])
    perm, kept, k = _reduce_layout(node, shape)
    b = x.lower.shape[0]
    return (x.lower.permute(perm).reshape(b, -1, k), x.upper.permute(perm).reshape(b, -1, k))


def _reducemax_backward(node, coef, args, alpha=None):
    """y = max over ``axes``: the reduced axes form one window per kept position."""
    x = args[0]
    if not node.attrs["axes"]:
        return [coef], None
    if not _finite(x):
        return None, None
    shape = tuple(x.lower.shape[1:])
    perm, kept, k = _reduce_layout(node, shape)
    lo, up = _reduce_windows(node, x)
    b, s = coef.shape[:2]
    if alpha is None:  # (``max_relax.default_cells``: no dense temporaries but the result)
        *parts, offset = max_relax.default_cells(coef.reshape(b, s, -1), lo, up)
        win = torch.zeros((b, s, *lo.shape[1:]), dtype=coef.dtype, device=coef.device)
        for cell, value in parts:
            win.scatter_add_(-1, cell.view(-1, 1, cell.shape[-1], 1).expand(b, s, -1, 1),
                             value.unsqueeze(-1))
    else:
        win, offset = max_relax.max_backward(coef.reshape(b, s, -1), lo, up, alpha)
    moved = win.reshape(b, s, *kept, *[shape[p - 1] for p in perm[1 + len(kept):]])
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [moved.permute([0] + [i + 1 for i in inverse]).contiguous()], offset


def max_alpha_init(node, args, n_spec: int) -> torch.Tensor | None:
    """Initial alpha [B, S, R, K] of a MaxPool/ReduceMax node (the default lower plane)."""
    x = args[0]
    if not _finite(x) or (node.op == "ReduceMax" and not node.attrs["axes"]):
        return None
    lo = (_pool_windows(node, x, upper=False)[2] if node.op == "MaxPool"
          else _reduce_windows(node, x)[0])
    return max_relax.initial_alpha(lo, n_spec)


_LINEAR = OpTraits(affine=True, monotone=True)
_MONO = OpTraits(monotone=True)


#: Averages and sums are dot products with constant weights; window maxima round nothing and
#: have lower-plane weights for alpha-CROWN and an exact big-M MILP encoding.
_SUM = {**AFFINE_FIELDS, "rounding": Rounding.DOT}
_WINDOW_MAX = {"alpha": Alpha(max_alpha_init, structured=True), "rounding": Rounding.EXACT,
        "split": None, "milp": Milp("window_max")}


def _rule(op, forward, traits, doc, fields, backward=None, floor=None):
    return OpRule(op, forward=forward, ibp=ibp_monotone(forward), traits=traits, doc=doc,
                  backward=backward, floor=floor, **fields)


RULES = (
    _rule("AveragePool", _avg_forward, _LINEAR, "window mean", _SUM, _avg_backward),
    _rule("GlobalAveragePool", _global_avg, _LINEAR, "mean over spatial axes", _SUM,
          _global_avg_backward),
    _rule("MaxPool", _max_forward, _MONO, "window max; y >= sum lam x_k, y <= chord of "
          "max(x_j, m)", _WINDOW_MAX, _maxpool_backward),
    _rule("ReduceSum", _reduce_sum, _LINEAR, "sum over axes", _SUM, _reduce_backward(False),
          floor=nonneg_reduce_floor(_reduce_sum)),
    _rule("ReduceMean", _reduce_mean, _LINEAR, "mean over axes", _SUM, _reduce_backward(True),
          floor=nonneg_reduce_floor(_reduce_mean)),
    _rule("ReduceMax", _reduce_max, _MONO, "max over axes (MaxPool's planes)", _WINDOW_MAX,
          _reducemax_backward),
)
