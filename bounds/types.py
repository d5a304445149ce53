"""Value types shared by the bound engines and rules."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Interval:
    """Elementwise bounds ``lower <= x <= upper``; tensors of shape ``[B, *shape]``."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2

    def map(self, fn) -> Interval:
        """Apply a monotone nondecreasing map to both ends."""
        return Interval(fn(self.lower), fn(self.upper))


@dataclass(frozen=True)
class Relaxation:
    """Linear bounds of an elementwise function f on its input interval [l, u]:

        lower_slope * x + lower_offset <= f(x) <= upper_slope * x + upper_offset   for x in [l, u].

    All four tensors have the shape of the input interval (broadcastable to it).
    """

    lower_slope: torch.Tensor
    lower_offset: torch.Tensor
    upper_slope: torch.Tensor
    upper_offset: torch.Tensor


def box_min(a: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """min over the boxes of a . x: a [N, S, d], lower/upper [N, d] -> [N, S]."""
    lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
    return torch.minimum(a * lo, a * hi).sum(-1)


@dataclass
class LinearBounds:
    """a_lo . x + c_lo <= value <= a_hi . x + c_hi for every x in the box the bounds were
    computed on (hence on every sub-box). ``a_*`` [B, numel, d], ``c_*`` [B, numel]; positions
    without a linear bound have a = 0 and c = -inf / +inf."""

    a_lo: torch.Tensor
    c_lo: torch.Tensor
    a_hi: torch.Tensor
    c_hi: torch.Tensor

    def concretize(self, lower: torch.Tensor, upper: torch.Tensor, shape) -> Interval:
        """Interval of the value over the boxes [B, d] (B matching the bounds' batch)."""
        vlo = self.c_lo + box_min(self.a_lo, lower, upper)
        vhi = self.c_hi - box_min(-self.a_hi, lower, upper)
        return Interval(vlo.reshape(-1, *shape), vhi.reshape(-1, *shape))

    def select(self, idx) -> LinearBounds:
        """The bounds of the domains ``idx``."""
        return LinearBounds(self.a_lo[idx], self.c_lo[idx], self.a_hi[idx], self.c_hi[idx])
