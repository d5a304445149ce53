"""Pooling and reductions: AveragePool, GlobalAveragePool, MaxPool, ReduceSum/Mean/Max.

AveragePool, GlobalAveragePool, ReduceSum, ReduceMean are fixed nonnegative linear maps
(affine and monotone: IBP is the map applied to both ends, exact for a box). MaxPool and
ReduceMax are monotone (IBP = max of lowers, max of uppers), not affine.

Pool attrs (set by the importer): kernel_shape, strides, dilations, ONNX-ordered ``pads`` and
``extra`` (zeros appended at the end of each spatial axis so ceil_mode windows are complete).
AveragePool divides the window sum by the number of counted cells: the padded cells count when
``count_include_pad``, the ``extra`` cells never do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bounds.registry import OpRule, OpTraits
from bounds.rules.common import ibp_monotone

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


def _reduce(fn):
    def forward(node, args):
        x = args[0]
        axes = tuple(int(d) + 1 for d in node.attrs["axes"])
        if not axes:
            return x
        return fn(x, axes, bool(node.attrs["keepdims"]))

    return forward


_reduce_sum = _reduce(lambda x, d, k: x.sum(dim=d, keepdim=k))
_reduce_mean = _reduce(lambda x, d, k: x.mean(dim=d, keepdim=k))
_reduce_max = _reduce(lambda x, d, k: x.amax(dim=d, keepdim=k))

_LINEAR = OpTraits(affine=True, monotone=True)
_MONO = OpTraits(monotone=True)


def _rule(op, forward, traits, doc):
    return OpRule(op, forward=forward, ibp=ibp_monotone(forward), traits=traits, doc=doc)


RULES = (
    _rule("AveragePool", _avg_forward, _LINEAR, "window mean"),
    _rule("GlobalAveragePool", _global_avg, _LINEAR, "mean over spatial axes"),
    _rule("MaxPool", _max_forward, _MONO, "window max"),
    _rule("ReduceSum", _reduce_sum, _LINEAR, "sum over axes"),
    _rule("ReduceMean", _reduce_mean, _LINEAR, "mean over axes"),
    _rule("ReduceMax", _reduce_max, _MONO, "max over axes"),
)
