"""ScatterWindow: a masked write at input-dependent integer positions (ONNX ScatterND whose
indices are windows of Range values sliced at input-dependent starts, e.g. a patch pasted into
an image at a position given by the input).

Set by the importer (``verifier/onnx_import/converters/scatter.py``): inputs are the data D and
the updates U (both of the output's shape, dynamic or constant: the importer has placed each
update at the position it lands on), the starts ``s`` (a dynamic vector of integers held as
floats, one per windowed axis) and a constant 0/1 mask M (the positions the constant index
components reach); attrs ``axes`` (distinct output axes), ``first`` and ``last`` (per axis: the
window is floor(s) + first .. floor(s) + last). With p = floor(s) (the integers ONNX gives are
unchanged; floor is nondecreasing, so the bounds below hold for any real s):

    out[q] = U[q] if M[q] and first_i <= q[axes_i] - p_i <= last_i for every i, else D[q].

Positions of the window outside the axis are simply not written: ONNX's Slice clamps the
window of Range values to the axis, so ScatterND writes exactly the window's part inside it.
A negative start means something else in ONNX (it counts from the end): starts with p < 0 are
outside the op's domain; ``forward`` gives NaN there and ``ibp`` refuses a box reaching them.

IBP: with p_i in [a_i, b_i], q is surely in the window on axis i iff b_i + first_i <= q_i and
q_i <= a_i + last_i, possibly iff a_i + first_i <= q_i <= b_i + last_i. The output is U's
interval where every axis is sure (and M), D's where some axis cannot be in (or not M), and the
hull of both elsewhere: every point of the box writes U or keeps D there. Exact when every
start's floor is fixed (a == b).

CROWN (``backward``): out = D on positions surely outside, U on positions surely inside, both
exact linear maps; the uncertain positions are concretised by their hull interval. The starts
and the mask get no coefficient. A copy rounds nothing; no alpha, no split, no MILP encoding.
"""

from __future__ import annotations

import torch

from bounds.engine.box_dot import box_lower
from bounds.registry import Milp, OpRule, OpTraits, Rounding, UnsupportedOpError
from bounds.types import Interval


def _ends(node, pos: int, arg, batch_dtype: torch.dtype):
    """(lower, upper) of input ``pos``, batched [B or 1, *shape] (a constant has no batch
    axis)."""
    if node.is_const(pos):
        x = arg.to(batch_dtype).unsqueeze(0)
        return x, x
    if isinstance(arg, Interval):
        return arg.lower, arg.upper
    return arg, arg


def _membership(node, shape, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor):
    """(surely in, possibly in) [B, *shape] for starts whose floors lie in [a, b] ([B, n]),
    within the constant ``mask``."""
    batch = a.shape[0]
    sure = torch.ones((batch, *shape), dtype=torch.bool, device=a.device)
    maybe = sure.clone()
    for i, axis in enumerate(node.attrs["axes"]):
        first, last = int(node.attrs["first"][i]), int(node.attrs["last"][i])
        q = torch.arange(shape[int(axis)], device=a.device, dtype=a.dtype)
        view = [batch] + [1] * len(shape)
        view[int(axis) + 1] = -1
        ai, bi = a[:, i:i + 1], b[:, i:i + 1]
        s_in = ((bi + first <= q) & (q <= ai + last)).reshape(view)
        m_in = ((ai + first <= q) & (q <= bi + last)).reshape(view)
        sure, maybe = sure & s_in, maybe & m_in
    mask = torch.as_tensor(mask, device=a.device) != 0
    return sure & mask, maybe & mask


def _floors(node, starts_lo: torch.Tensor, starts_hi: torch.Tensor):
    a = torch.floor(starts_lo.double().reshape(starts_lo.shape[0], -1))
    b = torch.floor(starts_hi.double().reshape(starts_hi.shape[0], -1))
    return a, b


def _forward(node, args):
    data, upd, start = args[0], args[1], args[2]
    a, _ = _floors(node, start, start)
    sure, _ = _membership(node, node.shape, a, a, args[3])
    d_lo, _ = _ends(node, 0, data, start.dtype)
    u_lo, _ = _ends(node, 1, upd, start.dtype)
    y = torch.where(sure, u_lo, d_lo)
    ok = (a >= 0).all(-1).reshape(-1, *([1] * len(node.shape)))
    return torch.where(ok, y, torch.full_like(y, float("nan")))


def _sets(node, args):
    """(D bounds, U bounds, surely in, possibly in) of the node on the box; refuses a box whose
    starts reach a negative floor."""
    data, upd, start = args[0], args[1], args[2]
    a, b = _floors(node, start.lower, start.upper)
    if not bool((a >= 0).all()) or not bool(torch.isfinite(b).all()):
        bad = int(((a < 0) | ~torch.isfinite(b)).any(-1).nonzero()[0, 0])
        raise UnsupportedOpError(
            "ScatterWindow", node.name,
            reason=f"starts in [{start.lower.reshape(a.shape)[bad].tolist()}, "
                   f"{start.upper.reshape(b.shape)[bad].tolist()}]: a negative (or infinite) "
                   "start counts from the end in ONNX; only starts >= 0 are handled")
    dtype = start.lower.dtype
    sure, maybe = _membership(node, node.shape, a, b, args[3])
    return _ends(node, 0, data, dtype), _ends(node, 1, upd, dtype), sure, maybe


def _hull(d, u, sure, maybe):
    lower = torch.where(sure, u[0], torch.where(maybe, torch.minimum(u[0], d[0]), d[0]))
    upper = torch.where(sure, u[1], torch.where(maybe, torch.maximum(u[1], d[1]), d[1]))
    return lower, upper


def _ibp(node, args):
    d, u, sure, maybe = _sets(node, args)
    return Interval(*_hull(d, u, sure, maybe))


def _offset(coef: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """min of coef . y over lower <= y <= upper, per [B, S] (0 * inf terms skipped)."""
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
    terms = torch.where(coef > 0, coef * lo, torch.where(coef < 0, coef * hi, 0.0))
    return terms.flatten(2).sum(-1)


def _backward(node, coef, args, alpha=None):
    """Exact copies where membership is sure either way, the hull elsewhere (docstring)."""
    d, u, sure, maybe = _sets(node, args)
    lower, upper = _hull(d, u, sure, maybe)
    if node.is_const(0) and node.is_const(1):
        # only the starts move the output, and they get no coefficient: the step concretises
        # the whole hull (equal to its constants where membership is sure either way), in
        # the centred form's two products instead of a pass per part (cctsdb's patch mask:
        # 85 ms a step on its 12288 pixels)
        b, s = coef.shape[:2]
        return [None] * 4, box_lower(coef.reshape(b, s, -1), lower.flatten(1),
                                     upper.flatten(1))
    keep_d = (~maybe).unsqueeze(1).to(coef.dtype)
    keep_u = sure.unsqueeze(1).to(coef.dtype)
    rest = 1 - keep_d - keep_u
    offset = _offset(coef * rest, lower, upper)
    coefs = [None, None, None, None]
    for pos, keep, ends in ((0, keep_d, d), (1, keep_u, u)):
        if node.is_const(pos):
            offset = offset + _offset(coef * keep, ends[0], ends[1])
        else:
            coefs[pos] = coef * keep
    return coefs, offset


RULES = (
    OpRule("ScatterWindow", forward=_forward, ibp=_ibp, backward=_backward,
           traits=OpTraits(),
           doc="ScatterND at an input-dependent window: U inside, D outside, hull if unsure",
           alpha=None, rounding=Rounding.EXACT, split=None, milp=Milp("none")),
)
