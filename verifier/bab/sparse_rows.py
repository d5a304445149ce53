"""Per-domain tensors that are mostly zeros, kept as their nonzero positions and values.

A queued domain's betas (warm starts of its split constraints) are nonzero only where the
domain has a split: the beta of an unsplit neuron multiplies no constraint, gets no gradient
and stays 0. Dense, they were 112 of the 278 kB a queued domain held on oval21 base (float32
[S, 16x16x16 + 32x8x8 + 100] per domain), while a domain deep in the search has some tens of
splits. ``pack`` keeps, per domain, the positions where any row is nonzero (padded to the
batch's largest count with index -1) and their values; ``unpack`` restores the dense tensor
exactly.

A Relu-like kink's alphas (its rule's ``KINK_ALPHA``: lower-bound slopes, warm starts too)
matter only where the kink is unstable (l < 0 < u): elsewhere its relaxation is exact and
reads no alpha (the fact ``bounds.engine.alpha.alpha_positions`` uses too), and a child's
bounds lie within its parent's, so a neuron stable in a domain stays stable below it. They
are packed at the domain's unstable positions (``keep``) and come back as 0 elsewhere.
"""

from __future__ import annotations

import math

import torch

INDEX_DTYPE = torch.int32


def pack(dense: torch.Tensor, keep: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [N, S, K], index [N, K]) of ``dense`` [N, S, *shape]: the K positions (flat
    in ``shape``) of each domain where some row is nonzero (or where ``keep`` [N, *shape] is
    True: the others then come back as 0), first to last, then index -1 and value 0 as
    padding; K is the largest count over the domains."""
    n, s = dense.shape[:2]
    flat = dense.reshape(n, s, -1)
    chosen = (flat != 0).any(dim=1) if keep is None else keep.reshape(n, -1)  # [N, M]
    k = int(chosen.sum(dim=1).max()) if n else 0
    # stable sort on "not chosen": each domain's chosen positions first, in their order
    order = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :k]
    keep = torch.gather(chosen, 1, order)
    values = torch.gather(flat, 2, order.unsqueeze(1).expand(n, s, k))
    values = torch.where(keep.unsqueeze(1), values, torch.zeros((), dtype=values.dtype))
    index = torch.where(keep, order, -1).to(INDEX_DTYPE)
    return values, index


def unpack(values: torch.Tensor, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense [N, S, *shape] tensor that ``pack`` gave (values, index) for."""
    n, s, _ = values.shape
    dense = torch.zeros((n, s, math.prod(shape)), dtype=values.dtype, device=values.device)
    pos = index.to(torch.long).clamp(min=0).unsqueeze(1).expand_as(values)
    # padding adds 0 at position 0: scatter_add leaves a real value there as it is
    dense.scatter_add_(2, pos, torch.where(index.unsqueeze(1) >= 0, values,
                                           torch.zeros((), dtype=values.dtype)))
    return dense.reshape(n, s, *shape)


def pad_to(values: torch.Tensor, index: torch.Tensor, k: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, index) padded to K = ``k`` positions (k >= their own)."""
    extra = k - index.shape[1]
    if extra <= 0:
        return values, index
    return (torch.nn.functional.pad(values, (0, extra)),
            torch.nn.functional.pad(index, (0, extra), value=-1))
