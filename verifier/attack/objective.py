"""The attack objective: how far an output is from the unsafe set of an output condition.

A region's condition is OR_d AND_k coef[d, k] @ y <= rhs[d, k]. For one disjunct the loss is
max_k (coef[d, k] @ y - rhs[d, k]): it is <= 0 exactly when every row holds. Over disjuncts the
loss is the min, so ``loss(y) <= 0`` iff the condition holds on y (up to float rounding, which
is why counterexamples are re-checked with onnxruntime). Padding rows (rhs = +inf) never count.

Regions whose conditions differ only in their thresholds (one per region: nn4sys-style specs
of thousands of boxes, each with its own output bound) share one ``TorchCondition`` whose rhs
has a leading region axis; ``at(box)`` gives the condition of a batch of samples, sample i in
region ``box[i]``, so one forward pass serves all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bounds.engine.forward import run_graph
from bounds.graph import Graph
from verifier.spec.types import OutputCondition

# Disjunct chunk so that B * D * K stays below this many elements per matmul.
_MAX_LHS_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class TorchCondition:
    """An OutputCondition as torch tensors: coef [D*K, n_out], rhs [D, K] (or [R, D, K]: one
    per region, or per sample after ``at``), mask [D, K]."""

    coef: torch.Tensor
    rhs: torch.Tensor
    active: torch.Tensor

    @classmethod
    def from_condition(
        cls, cond: OutputCondition, device: str | torch.device, dtype: torch.dtype
    ) -> TorchCondition:
        d, k, n = cond.coef.shape
        active = np.isfinite(cond.rhs)
        rhs = np.where(active, cond.rhs, 0.0)
        return cls(
            coef=torch.as_tensor(cond.coef.reshape(d * k, n), device=device, dtype=dtype),
            rhs=torch.as_tensor(rhs, device=device, dtype=dtype),
            active=torch.as_tensor(active, device=device),
        )

    @classmethod
    def from_conditions(cls, conds: list[OutputCondition], device: str | torch.device,
                        dtype: torch.dtype) -> TorchCondition:
        """Conditions with one coef and one pattern of padding rows, one rhs each: rhs
        [R, D, K] (a single condition keeps rhs [D, K])."""
        first = cls.from_condition(conds[0], device, dtype)
        if len(conds) == 1:
            return first
        rhs = np.stack([np.where(np.isfinite(c.rhs), c.rhs, 0.0) for c in conds])
        return cls(first.coef, torch.as_tensor(rhs, device=device, dtype=dtype), first.active)

    @property
    def per_region(self) -> bool:
        return self.rhs.dim() == 3

    def at(self, box: torch.Tensor) -> TorchCondition:
        """The condition of samples in regions ``box`` [B] (itself when all regions share one
        rhs)."""
        return TorchCondition(self.coef, self.rhs[box], self.active) if self.per_region else self

    def rows(self, start: int, stop: int) -> TorchCondition:
        """The condition of samples start..stop of a per-sample condition (``at``)."""
        if not self.per_region:
            return self
        return TorchCondition(self.coef, self.rhs[start:stop], self.active)

    @property
    def n_disjuncts(self) -> int:
        return int(self.rhs.shape[-2])

    def loss(self, y: torch.Tensor, push_all: bool = False,
             target: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss [B] for flattened outputs y [B, n_out]; <= 0 iff the condition holds.

        ``push_all`` adds the sum of the positive row gaps to each disjunct's max, which keeps
        the sign of the loss but gives every violated row a gradient (better for descent).
        ``target`` [B] (long): sample b's loss is that of disjunct ``target[b]`` alone (a
        targeted attack: <= 0 still means the condition holds), or the min over all
        disjuncts where ``target[b] < 0``.
        """
        d, k = self.rhs.shape[-2:]
        if self.per_region and self.rhs.shape[0] != y.shape[0]:
            raise ValueError(f"{self.rhs.shape[0]} rows of thresholds for {y.shape[0]} "
                             "samples: take the samples' condition with at(box)")
        if d == 0:
            return torch.full((y.shape[0],), math.inf, device=y.device, dtype=y.dtype)
        step = max(1, _MAX_LHS_ELEMENTS // max(1, y.shape[0] * k))
        parts = []
        for s in range(0, d, step):
            e = min(d, s + step)
            lhs = (y @ self.coef[s * k:e * k].T).reshape(y.shape[0], e - s, k)
            rhs = self.rhs[:, s:e] if self.per_region else self.rhs[s:e]
            gap = torch.where(self.active[s:e], lhs - rhs, -torch.inf)
            value = gap.amax(dim=2)
            if push_all:
                value = value + torch.relu(gap).sum(dim=2)
            parts.append(value if target is not None else value.amin(dim=1))
        if target is not None:
            value = torch.cat(parts, dim=1)  # [B, D]
            chosen = value.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
            return torch.where(target >= 0, chosen, value.amin(dim=1))
        return torch.stack(parts, dim=1).amin(dim=1) if len(parts) > 1 else parts[0]


def graph_outputs(graph: Graph, x: torch.Tensor, surrogate: bool = False) -> torch.Tensor:
    """Flattened, concatenated outputs [B, n_out] of the graph on flattened inputs x [B, n_in]
    (``surrogate``: straight-through gradients across steps, the same values; ``run_graph``)."""
    inputs, offset = [], 0
    for info in graph.inputs:
        size = math.prod(info.shape)
        inputs.append(x[:, offset:offset + size].reshape(x.shape[0], *info.shape))
        offset += size
    outs = run_graph(graph, *inputs, surrogate=surrogate)
    return torch.cat([o.reshape(o.shape[0], -1) for o in outs], dim=1)


def sample_bytes(graph: Graph) -> int:
    """Rough memory per sample of a forward+backward pass (float32, every value kept)."""
    values = sum(math.prod(t.shape) for t in graph.inputs)
    values += sum(math.prod(n.shape) for n in graph.nodes)
    return 4 * 3 * max(1, values)
