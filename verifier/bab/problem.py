"""A spec region as tensors for the bound engines, and what a bound says about it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from verifier.spec.types import InputRegion


@dataclass(frozen=True)
class RegionProblem:
    """One input box with its DNF condition flattened into spec rows.

    Rows are ordered disjunct-major: row ``d * K + k`` is constraint k of disjunct d. The
    property is violated inside the box when for some d all rows k have ``coef @ y <= rhs``.
    """

    index: int
    lower: torch.Tensor  # [d] float64
    upper: torch.Tensor
    coef: torch.Tensor  # [D * K, n_out]
    rhs: torch.Tensor  # [D * K]
    n_disjuncts: int
    n_rows: int  # K

    @classmethod
    def from_region(cls, index: int, region: InputRegion, device, dtype) -> RegionProblem:
        cond = region.condition
        d, k, n_out = cond.coef.shape

        def t(a):
            return torch.as_tensor(a, device=device, dtype=dtype)

        lower, upper = region.bound_box()
        return cls(index, t(lower), t(upper), t(cond.coef.reshape(d * k, n_out)),
                   t(cond.rhs.reshape(d * k)), d, k)

    def refuted_disjuncts(self, lower: torch.Tensor) -> torch.Tensor:
        """[B, D] mask: disjunct d cannot hold (some row's lower bound of coef@y - rhs > 0)."""
        return (lower.reshape(lower.shape[0], self.n_disjuncts, self.n_rows) > 0).any(-1)

    def margin(self, lower: torch.Tensor, refuted: torch.Tensor) -> torch.Tensor:
        """[B] how far each domain is from a proof: min over open disjuncts of its best row."""
        best = lower.reshape(lower.shape[0], self.n_disjuncts, self.n_rows).max(-1).values
        best = torch.where(refuted, torch.full_like(best, float("inf")), best)
        return best.min(-1).values

    def violation_loss(self, y: torch.Tensor) -> torch.Tensor:
        """[B] how far outputs y [B, n_out] are from a violation (<= 0: some disjunct holds):
        min over disjuncts of the largest row value coef@y - rhs."""
        lhs = y.to(self.coef.dtype) @ self.coef.T - self.rhs
        return lhs.reshape(y.shape[0], self.n_disjuncts, self.n_rows).max(-1).values.min(-1).values

    def violated(self, y: torch.Tensor) -> torch.Tensor:
        """[B] mask: outputs y [B, n_out] satisfy some disjunct (checked in the IR, float64)."""
        lhs = y.to(self.coef.dtype) @ self.coef.T - self.rhs
        ok = (lhs <= 0).reshape(y.shape[0], self.n_disjuncts, self.n_rows).all(-1)
        return ok.any(-1)
