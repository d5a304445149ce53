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


@dataclass(frozen=True)
class LinearBound:
    """``y >= coef . x + offset`` (or <=, by context) for x ranging over the input box.

    ``coef`` has shape ``[B, S, *input_shape]`` and ``offset`` shape ``[B, S]``.
    """

    coef: torch.Tensor
    offset: torch.Tensor
