"""Where each variable of a query lives in the flat vectors the verifier works on.

A query that goes beyond one input box and one output tensor (hidden nodes, several input or
output tensors, several networks, constraints mixing variables of several inputs or inputs
and outputs, products of variables) is verified on one rewritten model (``verifier.compose``)
with one flat input ``z`` and one flat output ``y``:

* ``z`` holds the *free* input variables: the declared inputs of every network in declaration
  order, where inputs that a top-level assertion equates (``(= A[0] B[0])``) share one entry.
  ``input_index[i]`` is the entry of declared input element ``i``.
* ``y`` is ``[values, passthrough, monomials]``: ``values`` are the declared hidden and output
  tensors of every network in declaration order; ``passthrough[k]`` is the ``z`` entry copied
  to ``y`` so that a constraint over several inputs, or over inputs and outputs, is a
  constraint on ``y`` (the box stays a box); ``monomials[k]`` is a product of *base* values
  ``((position, power), ...)``, where position ``p < n_values`` is ``values[p]`` and
  ``p >= n_values`` is ``z[p - n_values]``, so that a polynomial constraint is linear in ``y``.

The rewritten model computes ``y`` in float32; :meth:`Layout.outputs` recomputes it in float64
from the declared values (passthrough exact; a product of two float32 numbers is exact in
float64), which is what counterexamples are finally checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Monomial = tuple[tuple[int, int], ...]  # ((base position, power), ...), positions ascending


@dataclass(frozen=True, eq=False)
class Layout:
    """Positions of declared and derived variables in the flat input ``z`` and output ``y``."""

    input_index: np.ndarray  # int64 [n declared input elements] -> z entry
    n_z: int
    n_values: int  # declared hidden + output elements, in declaration order
    passthrough: tuple[int, ...] = ()  # z entries copied into y after the values
    monomials: tuple[Monomial, ...] = ()

    @property
    def n_outputs(self) -> int:
        return self.n_values + len(self.passthrough) + len(self.monomials)

    @property
    def unified(self) -> bool:
        """True when some declared inputs share a z entry."""
        return self.n_z != len(self.input_index)

    @property
    def trivial(self) -> bool:
        """True when y is just the declared values and z just the declared inputs."""
        return not (self.unified or self.passthrough or self.monomials)

    def declared_inputs(self, z: np.ndarray) -> np.ndarray:
        """The value of every declared input element, from the free inputs ``z``."""
        return np.asarray(z, dtype=np.float64).reshape(-1)[self.input_index]

    def outputs(self, values: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``y`` in float64 from the declared values and the free inputs."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        base = np.concatenate([values, z])
        mono = [float(np.prod([base[p] ** k for p, k in m])) for m in self.monomials]
        return np.concatenate([values, z[list(self.passthrough)], np.asarray(mono)])


def trivial_layout(n_inputs: int, n_values: int) -> Layout:
    """The layout of a query that needs no rewriting: z = inputs, y = values."""
    return Layout(np.arange(n_inputs, dtype=np.int64), n_inputs, n_values)
