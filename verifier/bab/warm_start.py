"""Warm starts across a GenBaB split: the alphas of a split neuron, carried to its children.

The smooth ops' alpha is relative to the neuron's interval (tangent point d = l + alpha (u - l),
see ``bounds.rules.tangents``), so after a split the parent's alpha names another tangent point
in each child, and its planes can be far worse than the parent's: a Sigmoid on [-4.04, 4.97]
with alpha 1 has slope f'(4.97) = 0.007; its lower half [-4.04, 0.46] with alpha 1 gets slope
f'(0.46) = 0.235. The child's optimisation then starts far from the parent's optimum, can stay
in a worse basin (the parent's planes need not be in the child's family at all), and ends below
the bound its parent already had (which it keeps: a split never loosens a bound), so a child of
a multi-split (``neuron_domains.split_more``) can stay open where the child of its first split
alone is refuted.

:class:`AlphaCarry` gives each child, at the neurons whose interval a split changed, the alpha
(on a grid over [0, 1]) whose planes have the slopes nearest the parent's planes. This is a warm
start only: any alpha in range gives a sound bound.
"""

from __future__ import annotations

import torch

from bounds.graph import Node
from bounds.registry import rules
from bounds.rules.tangents import DomainError
from verifier.bab.branching import SplitLayer

GRID = 33  # candidate alphas in [0, 1] for a child's neuron
F64 = torch.float64


class AlphaCarry:
    """Remaps the elementwise alphas of the nonlinear split layers' nodes from the parents'
    intervals to the children's, where a split changed them (see the module docstring)."""

    def __init__(self, layers: list[SplitLayer]):
        self.nodes = []
        for lay in layers:
            if lay.sign_split or lay.op not in rules():
                continue
            alpha = rules().get(lay.op).alpha
            if alpha is None or alpha.structured:
                continue
            node = Node(lay.node, lay.op, (lay.value,), lay.shape, dict(lay.attrs))
            self.nodes.append((lay, node, (alpha.low, alpha.high)))

    def __call__(self, parent, kids) -> None:
        """Set ``kids.alphas`` (in place) for ``kids``, children of ``parent`` (kid i of parent
        i mod len(parent)) whose split layers' bounds already carry their splits."""
        n, m = len(parent), len(kids)
        if n == 0 or m % n:
            raise ValueError(f"{m} children of {n} domains")
        for lay, node, limits in self.nodes:
            alphas = kids.alphas.get(lay.node)
            if alphas is None or lay.value not in parent.lower:
                continue
            old_lo = parent.lower[lay.value].reshape(n, -1).repeat(m // n, 1)
            old_up = parent.upper[lay.value].reshape(n, -1).repeat(m // n, 1)
            new_lo = kids.lower[lay.value].reshape(m, -1)
            new_up = kids.upper[lay.value].reshape(m, -1)
            rows, pos = ((old_lo != new_lo) | (old_up != new_up)).nonzero(as_tuple=True)
            if len(rows) == 0:
                continue
            flat = alphas.reshape(m, alphas.shape[1], -1).clone()
            try:
                picked = _nearest(node, flat[rows, :, pos].to(F64), limits,
                                  (old_lo[rows, pos], old_up[rows, pos]),
                                  (new_lo[rows, pos], new_up[rows, pos]))
            except DomainError:  # planes overflow (Exp of a wide interval): keep the old alpha
                continue
            flat[rows, :, pos] = picked.to(flat.dtype)
            kids.alphas[lay.node] = flat.reshape(alphas.shape)


def _nearest(node: Node, alpha: torch.Tensor, limits: tuple[float, float],
             old: tuple[torch.Tensor, torch.Tensor],
             new: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Per neuron k and row s the grid alpha on ``new`` [K] whose lower and upper slopes are
    nearest those of ``alpha`` [K, S] on ``old`` [K]."""
    rule = rules().get(node.op)
    k, s = alpha.shape
    with torch.no_grad():
        was = rule.relax(node, old[0].to(F64).unsqueeze(1).expand(k, s),
                         old[1].to(F64).unsqueeze(1).expand(k, s), alpha)
        grid = torch.linspace(limits[0], limits[1], GRID, dtype=F64, device=alpha.device)
        lo = new[0].to(F64).unsqueeze(0).expand(GRID, k)
        up = new[1].to(F64).unsqueeze(0).expand(GRID, k)
        cand = rule.relax(node, lo, up, grid.unsqueeze(1).expand(GRID, k))  # [G, K]
        dist = ((cand.lower_slope.unsqueeze(2) - was.lower_slope.unsqueeze(0)).abs()
                + (cand.upper_slope.unsqueeze(2) - was.upper_slope.unsqueeze(0)).abs())
        dist = torch.nan_to_num(dist, nan=float("inf"))
        return grid[dist.argmin(0)]  # [K, S]
