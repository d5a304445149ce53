"""Small helpers shared by rule modules."""

from __future__ import annotations

import numpy as np
import torch

from bounds.registry import Alpha, Milp, Rounding, Split, TableGrid
from bounds.types import Interval


def batch_axis(axis: int) -> int:
    """Static (per-sample) axis -> axis of the batched tensor."""
    return axis + 1


def ibp_monotone(forward):
    """IBP of an op that is nondecreasing in each dynamic input: evaluate at both ends."""

    def ibp(node, args):
        lows = [a.lower if isinstance(a, Interval) else a for a in args]
        ups = [a.upper if isinstance(a, Interval) else a for a in args]
        return Interval(forward(node, lows), forward(node, ups))

    return ibp


def sum_to_batch_spec(t: torch.Tensor) -> torch.Tensor:
    """Sum all axes after the first two ([B, S, ...] -> [B, S])."""
    return t.flatten(2).sum(-1) if t.dim() > 2 else t


def reduce_to_operand(coef: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum a backward coefficient [B, S, *out] over the axes an operand was broadcast along.

    Operands have the output's rank (the importer aligns ranks), so broadcast axes are those
    where the operand has size 1 and the output does not.
    """
    axes = tuple(i + 2 for i, d in enumerate(shape) if d == 1 and coef.shape[i + 2] != 1)
    return coef.sum(dim=axes, keepdim=True) if axes else coef


def static_shape(arg) -> tuple[int, ...]:
    """Per-sample shape of a dynamic argument (an Interval or a batched tensor)."""
    t = arg.lower if isinstance(arg, Interval) else arg
    return tuple(t.shape[1:])


def concretise_backward(node, coef, args, alpha=None):
    """Backward step of a piecewise-constant op: it declines (CROWN then concretises the node
    with its interval). Declaring it tells the engine (``analysis.is_relaxed``) that the node's
    interval depends on its inputs' bounds, so these are refined by CROWN before the node's
    interval is formed: a comparison or ArgMax of CROWN-bounded logits decides far more cases
    than one of IBP-bounded logits."""
    return None, None


def half_alpha(lower: torch.Tensor, upper: torch.Tensor, attrs=None) -> torch.Tensor:
    """Initial alpha of the smooth ops: the tangent point at the midpoint of [l, u]."""
    return torch.full_like(lower, 0.5)


def kink_alpha(lower: torch.Tensor, upper: torch.Tensor, attrs=None) -> torch.Tensor:
    """Initial alpha of a Relu-like kink: CROWN's adaptive slope, 1 where u > -l, else 0."""
    return (upper > -lower).to(lower.dtype)


#: alpha of the smooth ops (tangent point l + alpha (u - l)) and of the Relu-like kinks (slope).
TANGENT_ALPHA = Alpha(half_alpha)
KINK_ALPHA = Alpha(kink_alpha)
#: The fields of an affine op that has no alpha, no split and an exact affine MILP encoding.
AFFINE_FIELDS = {"alpha": None, "split": None, "milp": Milp("affine")}
#: The fields of a step op (piecewise constant): nothing to optimise or split, no encoding.
STEP_FIELDS = {"alpha": None, "split": None, "milp": Milp("none"), "rounding": Rounding.EXACT}


def table_split(*grids: TableGrid, key_of=None, scale_of=None) -> Split:
    """GenBaB's interval split at a looked-up point, with the op's tables."""
    return Split("table", "interval", tables=grids, key_of=key_of, scale_of=scale_of)


def broadcast_shape(*shapes) -> torch.Size:
    """The broadcast of ``shapes`` (numpy's rule, the same as torch's). torch.broadcast_shapes
    imports torch's symbolic-shapes module, and with it sympy, on its first call: ~0.9 s
    inside the first bound pass of every run."""
    return torch.Size(int(d) for d in np.broadcast_shapes(*(tuple(s) for s in shapes)))


def batched_data(node, x: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The node's first input as a batched tensor [batch, *shape]: a constant (no batch axis;
    integer constants, e.g. a Range, take the float dtype) is expanded, a batch of one too."""
    if node.is_const(0):
        return x.to(dtype).unsqueeze(0).expand(batch, *x.shape)
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else x


def interval_offset(coef: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
                    ) -> torch.Tensor:
    """min of coef . y over lower <= y <= upper, per [B, S]: coef [B, S, *shape], bounds
    [B, *shape] (0 * inf terms skipped)."""
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
    terms = torch.where(coef > 0, coef * lo, torch.where(coef < 0, coef * hi, 0.0))
    return terms.flatten(2).sum(-1)
