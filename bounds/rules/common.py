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
