"""Small helpers shared by rule modules."""

from __future__ import annotations

import torch

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
