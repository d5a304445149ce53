"""Piecewise-constant ops on values held as floats: Cast (to integer, bool or a narrower float
type), ArgMax and OneHot.

None has a linear relaxation; CROWN concretises them with their intervals, which are exact
where the input's interval fixes the output:

* Cast(to="int", min, max): truncation toward zero, as onnxruntime's float -> int conversion
  does. Truncation is nondecreasing, so [trunc(l), trunc(u)] holds every value in the box. A
  float outside the target type's range converts to an unspecified value of that type (ONNX;
  onnxruntime wraps around, see ``_to_int``), so a box that reaches past it gets the whole
  range [min, max], sound whatever the runtime does.
  Cast(to="bool"): x != 0 (0/1). Cast(to="float16"/"bfloat16"): rounding of the float32
  value to the narrower type, also nondecreasing, so evaluating it at the float32 values just
  outside the box's ends is sound (and exact where the ends are float32 values).
* ArgMax(axis, keepdims, last): the index j is a possible winner only if u_j >= max_i l_i (the
  winner's value is at least every other value, in particular the largest lower bound); the
  result lies between the smallest and the largest possible winner, and is exact when only one
  index can win. Ties go to the first (``last``: the last) index, as in ONNX.
* OneHot(depth, axis, on, off): output k is ``on`` where trunc(index) is k (or k - depth,
  negative indices count from the end) and ``off`` elsewhere, out-of-range indices included.
  It is surely ``on`` when the truncated index interval is that one value, surely ``off`` when
  the interval holds neither k nor k - depth, and either otherwise.
Cast also has slope-1 planes (``_cast_relax``), so CROWN passes through it. All are exact in
float32: they round nothing that the rule does not model. ArgMax names ``concretise_backward``
so that CROWN refines its input's bounds first (OneHot reads an index, whose bounds CROWN
cannot tighten).
"""

from __future__ import annotations

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.rules.common import STEP_FIELDS, broadcast_shape, concretise_backward
from bounds.rules.logic import surely_false, surely_true
from bounds.rules.tangents import F64, check_domain, margin
from bounds.types import Interval, Relaxation

NARROW_FLOATS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------- Cast
def _to_int(node, x: torch.Tensor) -> torch.Tensor:
    """Truncation toward zero; out of range, what onnxruntime does on x86: the conversion to
    its intermediate int32/int64 gives that type's minimum, then narrower types wrap around."""
    low, high = float(node.attrs["min"]), float(node.attrs["max"])
    via = 2.0 ** (int(node.attrs.get("via", 64)) - 1)
    t = torch.trunc(x)
    t = torch.where((t < -via) | (t >= via) | torch.isnan(t), torch.full_like(t, -via), t)
    wrapped = torch.remainder(t.double() - low, high - low + 1) + low  # float64: exact here
    return torch.where((t >= low) & (t <= high), t, wrapped.to(t.dtype))


def _cast_forward(node, args):
    x = args[0]
    to = node.attrs["to"]
    if to == "int":
        return _to_int(node, x)
    if to == "bool":
        return (x != 0).to(x.dtype)
    # the network's values are float32: rounding them straight from float64 could round twice
    return x.to(torch.float32).to(NARROW_FLOATS[to]).to(x.dtype)


def _float32_outward(lower: torch.Tensor, upper: torch.Tensor):
    """The float32 values nearest outside [lower, upper] (every float32 value in the box lies
    between them), so rounding them on to a narrower float bounds every value's rounding."""
    lo32, hi32 = lower.to(torch.float32), upper.to(torch.float32)
    lo32 = torch.where(lo32.to(lower.dtype) > lower, torch.nextafter(lo32, lo32 - 1), lo32)
    hi32 = torch.where(hi32.to(upper.dtype) < upper, torch.nextafter(hi32, hi32 + 1), hi32)
    return lo32.to(lower.dtype), hi32.to(upper.dtype)


def _cast_ibp(node, args):
    x = args[0]
    to = node.attrs["to"]
    if to == "bool":
        return Interval(surely_true(x).to(x.lower.dtype), (~surely_false(x)).to(x.lower.dtype))
    lower, upper = x.lower, x.upper
    if to in NARROW_FLOATS:
        lower, upper = _float32_outward(lower, upper)
    if to == "int":
        lower, upper = torch.trunc(lower), torch.trunc(upper)
        low, high = float(node.attrs["min"]), float(node.attrs["max"])
        outside = (lower < low) | (upper > high)
        lower = torch.where(outside, torch.full_like(lower, low), lower)
        upper = torch.where(outside, torch.full_like(upper, high), upper)
        return Interval(lower, upper)
    return Interval(_cast_forward(node, [lower]), _cast_forward(node, [upper]))


# Largest |rounding error| of float16 / bfloat16 relative to |x| (half an ulp: 2**-11, 2**-8)
# plus half their smallest subnormal spacing; and the values that round to infinity.
NARROW_ERROR = {"float16": (2.0**-11, 2.0**-25, 65520.0),
                "bfloat16": (2.0**-8, 2.0**-134, 3.3961e38)}


def _planes(lo_slope, lo_off, up_slope, up_off, dtype) -> Relaxation:
    return Relaxation(*(t.to(dtype) for t in (lo_slope, lo_off, up_slope, up_off)))


def _cast_relax(node, lower, upper, alpha=None) -> Relaxation:
    """Slope-1 planes x + [a, b] around the cast (trunc(x) - x lies in (-1, 0] for x >= 0 and
    [0, 1) for x <= 0; rounding to a narrow float moves x by at most rel |x| + tiny), constant
    planes where the interval fixes the value (and for bool, or past an integer type's range:
    the IBP interval). Offsets get the outward margin of ``tangents.margin``."""
    l, u = lower.detach().to(F64), upper.detach().to(F64)
    box = _cast_ibp(node, [Interval(l, u)])
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    mag = torch.maximum(l.abs(), u.abs())
    to = node.attrs["to"]
    if to == "bool":
        return _planes(zero, box.lower, zero, box.upper, lower.dtype)
    if to in NARROW_FLOATS:
        rel, tiny, overflow = NARROW_ERROR[to]
        check_domain(f"Cast node {node.name!r}", l, u, mag < overflow, "rounds to infinity")
        lo_off, up_off = -(rel * mag + tiny), rel * mag + tiny
        flat = box.lower == box.upper
    else:
        lo_off = torch.where(u > 0, -one, zero)
        up_off = torch.where(l < 0, one, zero)
        low, high = float(node.attrs["min"]), float(node.attrs["max"])
        flat = (box.lower == box.upper) | (torch.trunc(l) < low) | (torch.trunc(u) > high)
    lo_off = lo_off - margin(lo_off, one, mag, lower.dtype)
    up_off = up_off + margin(up_off, one, mag, lower.dtype)
    slope = torch.where(flat, zero, one)
    return _planes(slope, torch.where(flat, box.lower, lo_off), slope,
                   torch.where(flat, box.upper, up_off), lower.dtype)


# ---------------------------------------------------------------- ArgMax
def _positions(n: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., n - 1 along ``dim`` of a tensor shaped like ``like`` (broadcastable)."""
    shape = [1] * like.dim()
    shape[dim] = n
    return torch.arange(n, dtype=like.dtype, device=like.device).reshape(shape)


def _argmax_forward(node, args):
    x = args[0]
    dim = int(node.attrs["axis"]) + 1
    keep = bool(node.attrs.get("keepdims", 1))
    if node.attrs.get("last", 0):
        n = x.shape[dim]
        return (n - 1 - torch.argmax(x.flip(dim), dim, keepdim=keep)).to(x.dtype)
    return torch.argmax(x, dim, keepdim=keep).to(x.dtype)


def _argmax_ibp(node, args):
    x = args[0]
    dim = int(node.attrs["axis"]) + 1
    keep = bool(node.attrs.get("keepdims", 1))
    n = x.lower.shape[dim]
    can_win = x.upper >= x.lower.amax(dim, keepdim=True)
    pos = _positions(n, dim, x.lower)
    first = torch.where(can_win, pos, torch.full_like(pos, n)).amin(dim, keepdim=keep)
    last = torch.where(can_win, pos, torch.full_like(pos, -1)).amax(dim, keepdim=keep)
    # a NaN bound leaves no candidate: then any index is possible
    none = first > last
    first = torch.where(none, torch.zeros_like(first), first)
    last = torch.where(none, torch.full_like(last, n - 1), last)
    return Interval(first, last)


# ---------------------------------------------------------------- OneHot
def _onehot_parts(node, index: torch.Tensor):
    """(index with a new axis at the output's axis, the positions 0..depth-1 along it)."""
    dim = int(node.attrs["axis"]) + 1
    expanded = torch.trunc(index).unsqueeze(dim)
    return expanded, _positions(int(node.attrs["depth"]), dim, expanded)


def _onehot_forward(node, args):
    idx, k = _onehot_parts(node, args[0])
    depth = int(node.attrs["depth"])
    hit = (idx == k) | (idx == k - depth)
    on, off = float(node.attrs["on"]), float(node.attrs["off"])
    return torch.where(hit, torch.full_like(hit, on, dtype=idx.dtype),
                       torch.full_like(hit, off, dtype=idx.dtype))


def _onehot_ibp(node, args):
    lo, k = _onehot_parts(node, args[0].lower)
    hi, _ = _onehot_parts(node, args[0].upper)
    depth = int(node.attrs["depth"])
    on, off = float(node.attrs["on"]), float(node.attrs["off"])
    inside = ((lo <= k) & (k <= hi)) | ((lo <= k - depth) & (k - depth <= hi))
    sure = (lo == hi) & ((lo == k) | (lo == k - depth))
    shape = broadcast_shape(lo.shape, k.shape)
    low = torch.full(shape, off, dtype=lo.dtype, device=lo.device)
    high = low.clone()
    low = torch.where(inside, min(on, off), low)
    high = torch.where(inside, max(on, off), high)
    return Interval(torch.where(sure, on, low), torch.where(sure, on, high))


_STEP = OpTraits()  # piecewise constant: no relaxation, no split
RULES = (
    OpRule("Cast", forward=_cast_forward, ibp=_cast_ibp, relax=_cast_relax,
           traits=OpTraits(monotone=True, elementwise=True),
           doc="truncation to an integer type, x != 0 for bool, rounding to float16/bfloat16",
           reads_integer=lambda node: node.attrs.get("to") == "int",
           # the rule models the rounding to float16/bfloat16 itself
           alpha=None, rounding=Rounding.EXACT, split=None, milp=Milp("relaxed")),
    OpRule("ArgMax", forward=_argmax_forward, ibp=_argmax_ibp, backward=concretise_backward,
           doc="index of the largest value; candidates are the indices u_j >= max l",
           **{**STEP_FIELDS, "milp": Milp("argmax")}),
    OpRule("OneHot", forward=_onehot_forward, ibp=_onehot_ibp,
           doc="on where the truncated index equals the position, off elsewhere",
           **STEP_FIELDS),
)
