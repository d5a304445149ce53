"""What a branching-point table optimises, and the per-op table specifications.

Splitting a neuron's input interval [l, u] at p gives two sub-intervals, each relaxed by the op's
own default rule (``rule.relax`` with ``alpha=None``). The looseness of a split is the total
area between the upper and lower planes over both halves:

    area(l, p) + area(p, u),   area(a, b) = int_a^b (s_up - s_lo) x + (b_up - b_lo) dx
                                          = (s_up - s_lo) (b^2 - a^2) / 2 + (b_up - b_lo) (b - a).

Every point strictly inside (l, u) is a valid split (each half is relaxed soundly by the rule);
the table only changes how tight the halves are. The search (:func:`optimise_points`) is
vectorised over all cells at once: a dense set of candidate fractions t in (0, 1), p = l + t (u-l),
then a few zoom rounds of denser candidates around the best one. No unimodality is assumed (the
area of a Sin split need not be unimodal), so a dense first pass is the safeguard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bounds.graph import Node

F64 = torch.float64
#: Version of what a table means (objective, search, grid choice); bump when any of them changes.
TABLE_VERSION = 1
#: Search parameters of :func:`optimise_points` used to build the shipped tables.
SEARCH = {"coarse": 32, "fine": 9, "rounds": 3}


@dataclass(frozen=True)
class TableSpec:
    """One table: the op key, the IR op and attrs used to build its relaxation, and its grid.

    The grid is uniform: nodes ``lo + k * step`` for k = 0..n-1 (n = round((hi - lo) / step) + 1)
    on both axes (l along axis 0, u along axis 1); cells with l >= u hold NaN.
    """

    key: str
    op: str
    attrs: tuple[tuple[str, object], ...] = ()
    lo: float = -8.0
    hi: float = 8.0
    step: float = 0.05

    @property
    def n(self) -> int:
        return int(round((self.hi - self.lo) / self.step)) + 1

    def nodes(self) -> torch.Tensor:
        """Grid node coordinates (float64)."""
        return self.lo + self.step * torch.arange(self.n, dtype=F64)

    def grid(self) -> dict:
        """The grid definition stored with the table."""
        return {"lo": self.lo, "hi": self.hi, "step": self.step, "n": self.n}


def table_specs() -> dict[str, TableSpec]:
    """The tables to build, keyed as :func:`bounds.lookup.tables.table_key` returns: each rule
    whose ``split`` has a point "table" declares its tables' grids (``Split.tables``)."""
    from bounds.registry import rules

    specs = {}
    for op, rule in rules().items():
        for grid in rule.split.tables if rule.split is not None else ():
            specs[grid.key] = TableSpec(grid.key, op, grid.attrs, grid.lo, grid.hi, grid.step)
    return specs


def __getattr__(name: str):
    # SPECS (read by the CLI's tables command and the table tests): table_specs(), built on use
    if name == "SPECS":
        return table_specs()
    raise AttributeError(name)


def relax_fn(spec: TableSpec) -> Callable:
    """``relax(lower, upper)`` of the op's registered rule, default slopes (alpha=None)."""
    from bounds.registry import rules

    rule = rules().get(spec.op)
    node = Node(f"table_{spec.key}", spec.op, ("x",), (1,), attrs=dict(spec.attrs))
    return lambda lower, upper: rule.relax(node, lower, upper)


def piece_area(relax: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Area between the rule's upper and lower planes over [a, b] (float64)."""
    r = relax(a, b)
    ds = (r.upper_slope - r.lower_slope).to(F64)
    db = (r.upper_offset - r.lower_offset).to(F64)
    return ds * (b * b - a * a) / 2 + db * (b - a)


def split_area(relax: Callable, lower: torch.Tensor, upper: torch.Tensor,
               point: torch.Tensor) -> torch.Tensor:
    """Total looseness of splitting [lower, upper] at ``point`` (broadcast, float64)."""
    lower, upper, point = (t.to(F64) for t in (lower, upper, point))
    return piece_area(relax, lower, point) + piece_area(relax, point, upper)


def _best_fraction(relax, l, u, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of the candidate fractions ``t`` [C, K] for cells ``l``, ``u`` [C]."""
    lc, uc = l[:, None].expand_as(t), u[:, None].expand_as(t)
    area = split_area(relax, lc, uc, lc + t * (uc - lc))
    area = torch.where(torch.isfinite(area), area, torch.full_like(area, float("inf")))
    best, idx = area.min(1)
    return t.gather(1, idx[:, None])[:, 0], best


def optimise_points(relax: Callable, lower: torch.Tensor, upper: torch.Tensor,
                    coarse: int = 32, fine: int = 9, rounds: int = 3,
                    chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Split points minimising :func:`split_area` for 1-d float64 ``lower < upper``.

    Returns (points, areas). Resolution: about ``2 / coarse / fine**rounds`` of the width.
    """
    pts, areas = [], []
    for s in range(0, lower.numel(), chunk):
        l, u = lower[s:s + chunk].to(F64), upper[s:s + chunk].to(F64)
        c = l.numel()
        t = ((torch.arange(coarse, dtype=F64) + 0.5) / coarse).expand(c, coarse)
        best, area = _best_fraction(relax, l, u, t)
        half = 1.0 / coarse
        for _ in range(rounds):
            offs = torch.linspace(-half, half, fine, dtype=F64)
            t = (best[:, None] + offs).clamp(1e-6, 1 - 1e-6)
            cand, cand_area = _best_fraction(relax, l, u, t)
            better = cand_area < area
            best, area = torch.where(better, cand, best), torch.where(better, cand_area, area)
            half = 2 * half / (fine - 1)
        pts.append(l + best * (u - l))
        areas.append(area)
    return torch.cat(pts), torch.cat(areas)
