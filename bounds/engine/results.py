"""What the bound engines return, and the one memo they share between passes.

``compute_intermediate`` returns :class:`Intermediates` (the interval bounds of every value);
``backward_bound`` takes them as an argument and returns a :class:`BackwardResult`. Neither
writes into the other: every input is an argument, every result a value. Work that later
passes may reuse (relaxations, affine outputs at zero, measured rates) lives in a
:class:`PassCache` that the caller creates and hands to each call explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from bounds.engine.batch_rows import as_indices, pick_rows
from bounds.engine.deadline import checked
from bounds.graph import Graph
from bounds.types import Interval, LinearBounds


@dataclass(frozen=True)
class Intermediates:
    """Interval bounds of every value of ``graph`` over a batch of B input boxes.

    ``deltas[name]``: the float32 rounding allowance of each value (None: exact);
    ``infeasible`` [B] bool: a domain where some value's interval came out empty (its given
    constraints contradict each other); ``linear_bounds``: when recorded, per refined value
    the linear bounds in the input that CROWN found (input splitting concretises them over
    sub-boxes), else None."""

    graph: Graph
    box: Interval  # [B, *input_shape]
    bounds: Mapping[str, Interval]
    deltas: Mapping[str, torch.Tensor | None] = field(default_factory=dict)
    infeasible: torch.Tensor | None = None
    linear_bounds: Mapping[str, LinearBounds] | None = None

    @property
    def device(self) -> torch.device:
        return self.box.lower.device

    @property
    def dtype(self) -> torch.dtype:
        return self.box.lower.dtype

    @property
    def batch(self) -> int:
        return self.box.lower.shape[0]

    def select(self, rows: torch.Tensor) -> Intermediates:
        """The domains ``rows`` ([B] bool or indices) on their own (no linear records)."""
        b, rows = self.batch, as_indices(rows)

        def pick(t):
            return pick_rows(t, rows) if t is not None and t.dim() > 0 and t.shape[0] == b else t

        bounds = {k: Interval(pick(v.lower), pick(v.upper))
                  for k, v in checked(self.bounds.items())}
        return Intermediates(self.graph, Interval(pick(self.box.lower), pick(self.box.upper)),
                             bounds, {k: pick(d) for k, d in self.deltas.items()})


@dataclass(frozen=True)
class BackwardResult:
    """One backward pass: ``lower`` [B, S] bounds coef . value(start) from below.

    ``input_coef`` [B, S, *input_shape]: the linear coefficients that reached the input (only
    when asked for; None also when none reached it); ``kept_coef[name]``: the total
    coefficients [B, S, *shape] that reached each value asked for (a value that no
    coefficient reaches is left out)."""

    lower: torch.Tensor
    input_coef: torch.Tensor | None = None
    kept_coef: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnAlpha:
    """The alpha of an elementwise node at some of its positions only (sparse alpha):
    ``values`` [B, S, k] at the flat positions ``index`` [k]; every other position keeps the
    rule's default relaxation (both are sound planes, so any mix of them is sound)."""

    index: torch.Tensor
    values: torch.Tensor


@dataclass
class PassCache:
    """Work that bound passes reuse, never results: each node's default relaxation (valid for
    the intermediate bounds it was made from: :meth:`relaxations` starts afresh for others),
    affine nodes' outputs at a zero input (the graph's alone), and measured seconds per unit of
    work (used when no deadline block shares them), and the bounds in a lower working dtype
    with that dtype's own cache (alpha's iterations, ``work_dtype.lowered_view``)."""

    zero_output: dict[str, torch.Tensor] = field(default_factory=dict)
    rates: dict[object, float] = field(default_factory=dict)
    # dtype -> the bounds cast to it, with a cache of its own (``work_dtype.lowered_view``)
    work: dict[object, object] = field(default_factory=dict)
    # alpha's guide passes: the affine steps after a chain's last activation, as one matrix
    # (``guide.chain_guide``; kept with the input box they were made for)
    guides: dict[object, object] = field(default_factory=dict)
    _relaxations: dict[str, object] = field(default_factory=dict)
    _owner: object = None

    def relaxations(self, bounds: Mapping[str, Interval]) -> dict[str, object]:
        """node -> relaxation (None: concretise) for the value bounds ``bounds``."""
        if self._owner is not bounds:
            self._owner, self._relaxations = bounds, {}
        return self._relaxations

    def for_subset(self) -> PassCache:
        """A cache for a subset of the domains: the graph's zero outputs shared."""
        return PassCache(zero_output=self.zero_output)
