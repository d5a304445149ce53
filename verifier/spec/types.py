"""Normalised properties: input boxes, each with an output condition in DNF.

VNN-LIB states the *unsafe* set: the property is violated (``sat``) when some input x in a
region's box makes the region's output condition true. The condition is a disjunction of
conjunctions of linear constraints ``coef @ y <= rhs`` over the flattened outputs y.

Conjunctions are stored stacked per region, ``coef[D, K, n_out]`` and ``rhs[D, K]``, padded
with all-zero rows whose rhs is +inf (``0 <= inf`` is always true, so padding never changes
a conjunction). This keeps a 60,000-disjunct spec as two arrays instead of 60,000 objects.

Strict comparisons (``<``, ``>``) are stored as ``<=`` rows: bounding the closure of the unsafe
set is what refutes it (the boundary has no volume, and proving the closure empty proves the
set empty). ``strict[d, k]`` marks them so that :meth:`OutputCondition.holds`, the exact check
of a counterexample, still uses ``<`` there; ``strict`` is None when no row is strict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class OutputCondition:
    """Disjunction over d of (all k: coef[d, k] @ y <= rhs[d, k])."""

    coef: np.ndarray  # float64 [D, K, n_out]
    rhs: np.ndarray  # float64 [D, K]
    strict: np.ndarray | None = None  # bool [D, K]: the row is ``<`` (None: all ``<=``)

    @property
    def n_disjuncts(self) -> int:
        return int(self.coef.shape[0])

    def holds(self, y: np.ndarray) -> bool:
        """Exact check on one flattened output vector (float64 arithmetic)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        lhs = self.coef @ y
        ok = lhs <= self.rhs
        if self.strict is not None:
            ok &= ~self.strict | (lhs < self.rhs)
        return bool(np.any(np.all(ok, axis=1)))


@dataclass(frozen=True, eq=False)
class InputRegion:
    """An axis-aligned box over the flattened model input, with its output condition."""

    lower: np.ndarray  # float64 [n_in]
    upper: np.ndarray  # float64 [n_in]
    condition: OutputCondition

    def contains(self, x: np.ndarray) -> bool:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return bool(np.all(x >= self.lower) and np.all(x <= self.upper))

    def bound_box(self) -> tuple[np.ndarray, np.ndarray]:
        """The box the bound engines cover: the real box, widened where a coordinate's
        interval holds no float32 value to its float32 neighbours below and above.

        The network only ever runs on float32 inputs, and the attacks (and the VNN-COMP
        checker, within 1e-4) take those neighbours for such a coordinate; bounding them too
        makes ``unsat`` hold for the real box and for every float32 point nearest to it.
        """
        return float32_hull(self.lower, self.upper)


def float32_hull(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lower, upper], except where no float32 lies in it: there [largest float32 below
    lower, smallest float32 above upper] (see ``InputRegion.bound_box``)."""
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    with np.errstate(over="ignore"):
        below = lower.astype(np.float32)
        above = upper.astype(np.float32)
    below = np.where(below.astype(np.float64) > lower, np.nextafter(below, np.float32(-np.inf)),
                     below)
    above = np.where(above.astype(np.float64) < upper, np.nextafter(above, np.float32(np.inf)),
                     above)
    # No float32 in [lower, upper] exactly when the float32 at or above lower exceeds upper.
    first_inside = np.where(below.astype(np.float64) < lower,
                            np.nextafter(below, np.float32(np.inf)), below)
    empty = first_inside.astype(np.float64) > upper
    return (np.where(empty, below.astype(np.float64), lower),
            np.where(empty, above.astype(np.float64), upper))


@dataclass(frozen=True, eq=False)
class Spec:
    regions: tuple[InputRegion, ...]
    n_inputs: int
    n_outputs: int
    version: str = "1.0"
    source: str = ""

    def read_outputs(self) -> np.ndarray:
        """[n_outputs] bool: the output positions some condition reads (a nonzero
        coefficient)."""
        read = np.zeros(self.n_outputs, dtype=bool)
        for region in self.regions:
            read |= np.any(region.condition.coef != 0, axis=(0, 1))
        return read

    def violated_by(self, x: np.ndarray, y: np.ndarray) -> bool:
        """True when x lies in some region's box and y satisfies that region's condition."""
        return any(r.contains(x) and r.condition.holds(y) for r in self.regions)
