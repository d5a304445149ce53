"""DynamicSlice: an ONNX Slice whose starts depend on the input, with a static length per axis.

Set by the importer (``verifier/onnx_import/converters/shape.py``): inputs are the data (dynamic
or constant) and the starts ``s`` (a dynamic vector, one per axis, of integers held as floats:
ONNX starts are integer tensors, e.g. the Cast of an input element); attrs ``axes`` (static
axes of the data) and ``lengths`` (k per axis: the importer proved ends = starts + k); every
step is 1. The start read is floor(s): the same value for the integers ONNX gives, and a
nondecreasing map, so the intervals below stay sound for any real s.

ONNX semantics on an axis of size d: a negative start counts from the end (s + d), then start
and end = s + k are clamped to [0, d]. The output has length k exactly when neither clamp
acts: s in [0, d - k] (window from p = s) or s in [-d, -k - 1] (p = s + d). Any other start
makes ONNX's output shorter, which the IR's static shape cannot hold: those starts are outside
the op's domain. ``forward`` gives NaN there (so the importer's differential check against
onnxruntime fails on them) and ``ibp`` refuses a box that reaches them (UnsupportedOpError:
the verifier attacks instead of bounding). Inside the domain the output is
data[..., p:p + k, ...] along each axis, exactly.

IBP: with starts in [a, b] (floors of the start's bounds, both ends in the same branch),
output position j is data[p + j] for some p in [pa, pb], so its bounds are the min (max) of the
data's lower (upper) bounds over positions pa + j .. pb + j; over several axes the feasible
starts are a product of ranges, and the min over a product is the iterated min. Exact (a
static slice) when a == b.

CROWN (``backward``): for a box whose starts are fixed (a == b) the op is a fixed selection and
its adjoint scatters the coefficients back into the data (exact); for the other boxes the
output is concretised by its IBP interval (zero coefficients, offset A+ l + A- u). The starts
get no coefficient. Data movement rounds nothing; no alpha, no split, no MILP encoding.
"""

from __future__ import annotations

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding, UnsupportedOpError
from bounds.rules.common import batched_data, interval_offset
from bounds.types import Interval


def _dims(node, x: torch.Tensor, batched: bool) -> list[int]:
    shift = 1 if batched else 0
    return [int(x.shape[int(a) + shift]) for a in node.attrs["axes"]]


def _window_starts(node, dims: list[int], lo: torch.Tensor, hi: torch.Tensor):
    """For starts in [lo, hi] ([B, n]): (first, last) data positions [B, n] where the windows
    may begin, and the mask [B] of boxes whose every start lies in the op's domain."""
    k = torch.tensor(node.attrs["lengths"], dtype=torch.float64, device=lo.device)
    d = torch.tensor(dims, dtype=torch.float64, device=lo.device)
    a, b = torch.floor(lo.double()), torch.floor(hi.double())
    forward = (a >= 0) & (b <= d - k)
    backward = (a >= -d) & (b <= -k - 1)
    ok = (forward | backward).all(-1)
    shift = torch.where(forward, 0.0, d)
    first = torch.where(forward | backward, a + shift, 0.0).long()
    last = torch.where(forward | backward, b + shift, 0.0).long()
    return first, last, ok


def _refuse(node, lo: torch.Tensor, hi: torch.Tensor, ok: torch.Tensor, dims) -> None:
    bad = int((~ok).nonzero()[0, 0])
    raise UnsupportedOpError(
        "DynamicSlice", node.name,
        reason=f"starts in [{lo[bad].tolist()}, {hi[bad].tolist()}] on axes of size {dims} "
               f"with lengths {list(node.attrs['lengths'])}: some start clamps the slice, so "
               "the output would be shorter than the static shape (only starts s with "
               "0 <= s <= size - length or -size <= s < -length are handled)")


def _window(x: torch.Tensor, dim: int, first: torch.Tensor, width: torch.Tensor, k: int,
            reduce: str) -> torch.Tensor:
    """Along ``dim`` of a batched ``x``, output j of box b is the min/max ("min"/"max") of
    x[b, .., first[b] + j + t, ..] over t < width[b] (width >= 1; "id": width is 1)."""
    wide = max(1, int(width.max())) if width.numel() else 1  # (an empty box: width <= 0)
    t = torch.arange(wide, device=x.device)
    j = torch.arange(k, device=x.device)
    idx = first[:, None, None] + j[None, :, None] + t[None, None, :]  # [B, k, W]
    # a position past the box's width repeats its first one: the min/max is unchanged
    idx = torch.where(t[None, None, :] < width[:, None, None], idx, idx[..., :1])
    moved = x.movedim(dim, -1)
    idx = idx.reshape(x.shape[0], *([1] * (moved.dim() - 2)), k * wide)
    picked = torch.gather(moved, -1, idx.expand(*moved.shape[:-1], k * wide))
    picked = picked.reshape(*moved.shape[:-1], k, wide)
    if reduce == "min":
        picked = picked.amin(-1)
    elif reduce == "max":
        picked = picked.amax(-1)
    else:
        picked = picked[..., 0]
    return picked.movedim(-1, dim)


def _select(node, x: torch.Tensor, first, last, reduce: str) -> torch.Tensor:
    """The windows of every axis in turn (x batched; first/last [B, n])."""
    for i, (axis, k) in enumerate(zip(node.attrs["axes"], node.attrs["lengths"], strict=True)):
        x = _window(x, int(axis) + 1, first[:, i], last[:, i] - first[:, i] + 1, int(k), reduce)
    return x


def _forward(node, args):
    start = args[1]
    batch = start.shape[0]
    x = batched_data(node, args[0], batch, start.dtype)
    s = start.reshape(batch, -1)
    first, _, ok = _window_starts(node, _dims(node, x, True), s, s)
    y = _select(node, x, first, first, "id")
    nan = torch.full_like(y, float("nan"))
    return torch.where(ok.reshape(batch, *([1] * (y.dim() - 1))), y, nan)


def _bounds(node, args):
    """(lower, upper, first, last, fixed mask [B]) of the node on the box; refuses starts
    outside the domain."""
    data, start = args
    lo_s, hi_s = start.lower.reshape(start.lower.shape[0], -1), start.upper.reshape(
        start.upper.shape[0], -1)
    batch = lo_s.shape[0]
    lo = data.lower if isinstance(data, Interval) else data
    hi = data.upper if isinstance(data, Interval) else data
    batch = max(batch, 1 if node.is_const(0) else lo.shape[0])
    dtype = start.lower.dtype
    lo, hi = batched_data(node, lo, batch, dtype), batched_data(node, hi, batch, dtype)
    lo_s, hi_s = lo_s.expand(batch, -1), hi_s.expand(batch, -1)
    dims = _dims(node, lo, True)
    first, last, ok = _window_starts(node, dims, lo_s, hi_s)
    if not bool(ok.all()):
        _refuse(node, lo_s, hi_s, ok, dims)
    lower = _select(node, lo, first, last, "min")
    upper = _select(node, hi, first, last, "max")
    return lower, upper, first, last, (first == last).all(-1)


def _ibp(node, args):
    lower, upper, *_ = _bounds(node, args)
    return Interval(lower, upper)


def _scatter(node, coef: torch.Tensor, first: torch.Tensor, data_shape) -> torch.Tensor:
    """The adjoint of the fixed selection at ``first`` ([B, n]): coefficients [B, S, *out]
    placed back at the data positions they read, zero elsewhere."""
    b, s = coef.shape[:2]
    axes = list(node.attrs["axes"])
    shape = list(data_shape)
    sizes = []  # the data's shape before each axis' selection
    for axis, k in zip(axes, node.attrs["lengths"], strict=True):
        sizes.append(list(shape))
        shape[int(axis)] = int(k)
    c = coef.reshape(b * s, *coef.shape[2:])
    for i in reversed(range(len(axes))):
        dim, k = int(axes[i]) + 1, int(node.attrs["lengths"][i])
        full = list(sizes[i])
        pos = first[:, i].repeat_interleave(s)[:, None] + torch.arange(k, device=c.device)
        moved = c.movedim(dim, -1)
        idx = pos.reshape(b * s, *([1] * (moved.dim() - 2)), k).expand(*moved.shape)
        out = torch.zeros(*moved.shape[:-1], full[int(axes[i])], dtype=c.dtype, device=c.device)
        c = out.scatter_add(-1, idx, moved).movedim(-1, dim)
    return c.reshape(b, s, *data_shape)


def _backward(node, coef, args, alpha=None):
    """Exact adjoint where a box fixes the starts, the IBP interval elsewhere (docstring)."""
    lower, upper, first, _, fixed = _bounds(node, args)
    if node.is_const(0):
        # exact where fixed: lower == upper
        return [None, None], interval_offset(coef, lower, upper)
    keep = fixed.reshape(-1, 1, *([1] * (coef.dim() - 2))).to(coef.dtype)
    data_shape = tuple(args[0].lower.shape[1:])
    data_coef = _scatter(node, coef * keep, first.expand(coef.shape[0], -1), data_shape)
    offset = interval_offset(coef * (1 - keep), lower, upper)
    return [data_coef, None], offset


RULES = (
    OpRule("DynamicSlice", forward=_forward, ibp=_ibp, backward=_backward,
           traits=OpTraits(),
           doc="Slice at input-dependent integer starts, static lengths: window min/max",
           alpha=None, rounding=Rounding.EXACT, split=None, milp=Milp("none")),
)
