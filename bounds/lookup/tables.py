"""Run-time lookup of pre-optimised branching points (read-only, loaded once, hash-checked).

``branch_points(op, lower, upper)`` returns, for a whole batch of intervals at once, a point
strictly inside each (l, u) at which to split a neuron's input interval:

* intervals inside the op's table grid: the stored optimum, interpolated as a *fraction*
  t = (p - l) / (u - l) bilinearly between the four surrounding grid cells (cells with l >= u
  are skipped, and so are corners more than ``JUMP`` away from the corners' median: the optimum
  may jump between two local minima, and mixing the two would land between them), then
  p = l + t (u - l);
* outside the grid, ops without a table, or tables absent from the manifest: the midpoint;
* ops whose rule splits at the kink (``Split.point`` "zero": Relu, LeakyRelu, Abs, Sign): 0
  where l < 0 < u, the midpoint elsewhere;
* piecewise-linear ops with kinks elsewhere (``Split.point`` "kinks": Clip): the kink inside
  (l, u) nearest its midpoint (the kinks are those of the rule's MILP form), else the
  midpoint.

Soundness never depends on the table: any point strictly inside (l, u) is a valid split, the
table only decides how tight the two halves are. The result is clamped into [nextafter(l, u),
nextafter(u, l)] in the input dtype; an interval with no representable point strictly inside
(l == u) gets its midpoint. A table whose sha256 does not match the manifest is refused with
:class:`~bounds.lookup.build.TableError` the first time it is needed.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bounds.engine.analysis import kink_points
from bounds.lookup.build import DEFAULT_DIR, TableError, check_bytes, read_manifest
from bounds.registry import Split, rules

__all__ = ["TableError", "TableStore", "branch_points", "default_store", "strictly_inside",
           "table_key"]

F64 = torch.float64
#: Looked-up fractions are kept in [T_MIN, 1 - T_MIN] so that neither half is degenerate.
T_MIN = 1e-3
#: Corner fractions farther than this from the corners' median are left out of the interpolation.
JUMP = 0.15
log = logging.getLogger(__name__)


def _split(op: str) -> Split | None:
    registry = rules()
    return registry.get(op).split if op in registry else None


def table_key(op: str, attrs: Mapping | None = None) -> str:
    """The table key of an IR op, as its rule picks it (``Gelu`` with approximate="tanh" ->
    ``Gelu:tanh``); the op itself when its rule declares no table."""
    split = _split(op)
    key = split.table_key(attrs) if split is not None else None
    return op if key is None else key


@dataclass
class Table:
    """A loaded table: grid and the optimal split *fractions* (float64 [n, n], NaN if l >= u)."""

    key: str
    lo: float
    step: float
    n: int
    fractions: torch.Tensor
    _on_device: dict = field(default_factory=dict)

    @property
    def hi(self) -> float:
        return self.lo + self.step * (self.n - 1)

    def on(self, device: torch.device) -> torch.Tensor:
        """The flattened fractions on ``device`` (cached per device)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.fractions.reshape(-1).to(device)
        return self._on_device[key]


def _to_table(key: str, points, meta: dict) -> Table:
    grid = meta["grid"]
    n, lo, step = int(grid["n"]), float(grid["lo"]), float(grid["step"])
    x = lo + step * torch.arange(n, dtype=F64)
    p = torch.from_numpy(points).to(F64)
    frac = (p - x[:, None]) / (x[None, :] - x[:, None])
    frac = torch.where(x[:, None] < x[None, :], frac, torch.full_like(frac, float("nan")))
    return Table(key, lo, step, n, frac)


class TableStore:
    """The tables of one folder, each read and hash-checked once, on first use (thread safe)."""

    def __init__(self, folder: Path | str | None = None):
        self.folder = Path(folder) if folder is not None else DEFAULT_DIR
        self._lock = threading.Lock()
        self._manifest: dict | None = None
        self._tables: dict[str, Table | None] = {}

    def manifest(self) -> dict:
        """The folder's manifest (read once)."""
        with self._lock:
            if self._manifest is None:
                self._manifest = read_manifest(self.folder)
            return self._manifest

    def get(self, key: str) -> Table | None:
        """The table for ``key``, or None when the manifest lists none; raises TableError."""
        entries = self.manifest()["tables"]
        with self._lock:
            if key not in self._tables:
                entry = entries.get(key)
                if entry is None:
                    self._tables[key] = None
                else:
                    data = (self.folder / entry["file"]).read_bytes()
                    points, meta = check_bytes(key, data, entry)
                    self._tables[key] = _to_table(key, points, meta)
                    log.debug("loaded branching-point table %s from %s", key, self.folder)
            return self._tables[key]


_DEFAULT: TableStore | None = None


def default_store() -> TableStore:
    """The store of the tables shipped in the package."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TableStore()
    return _DEFAULT


def _interpolate(table: Table, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Bilinear fraction for in-grid intervals (float64), within the corners' majority branch."""
    n = table.n
    fi = ((l - table.lo) / table.step).clamp(0, n - 1)
    fj = ((u - table.lo) / table.step).clamp(0, n - 1)
    i0, j0 = fi.floor().clamp(max=n - 2), fj.floor().clamp(max=n - 2)
    wi, wj = fi - i0, fj - j0
    i0, j0 = i0.long(), j0.long()
    flat = table.on(l.device)
    corners = torch.stack([flat[(i0 + a) * n + j0 + b] for a in (0, 1) for b in (0, 1)])
    weights = torch.stack([(wi if a else 1 - wi) * (wj if b else 1 - wj)
                           for a in (0, 1) for b in (0, 1)])
    # corners far from their median sit across a jump of the optimum: leave them out, so the
    # result is an interpolation within one branch (plain bilinear when there is no jump)
    med = corners.nanmedian(0).values
    valid = ~torch.isnan(corners) & ((corners - med).abs() <= JUMP)
    weights = torch.where(valid, weights, torch.zeros_like(weights))
    vals = torch.where(valid, corners, torch.zeros_like(corners))
    den = weights.sum(0)
    t = (weights * vals).sum(0) / den.clamp(min=1e-12)
    return torch.where(den > 1e-9, t, torch.full_like(t, 0.5))


def _kink_nearest(kinks: tuple[float, ...], lower: torch.Tensor, upper: torch.Tensor,
                  mid: torch.Tensor) -> torch.Tensor:
    """Per element the kink strictly inside (lower, upper) nearest ``mid``; ``mid`` where
    none is (each child then has one kink fewer, and a child with none is exact)."""
    point, dist = mid, torch.full_like(mid, math.inf)
    for at in kinks:
        at_t = torch.full_like(mid, at)
        near = (lower < at_t) & (upper > at_t) & ((at_t - mid).abs() < dist)
        point = torch.where(near, at_t, point)
        dist = torch.where(near, (at_t - mid).abs(), dist)
    return point


def strictly_inside(p: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Clamp into (lower, upper) in the input dtype; the midpoint where nothing fits."""
    lo_in, hi_in = torch.nextafter(lower, upper), torch.nextafter(upper, lower)
    mid = lower + (upper - lower) / 2
    clamped = torch.minimum(torch.maximum(p, lo_in), hi_in)
    return torch.where(lo_in <= hi_in, clamped, mid)


def branch_points(op: str, lower: torch.Tensor, upper: torch.Tensor, *,
                  attrs: Mapping | None = None, store: TableStore | None = None) -> torch.Tensor:
    """Split points for intervals [lower, upper] of neurons of ``op`` (any shape, one step).

    ``attrs``: the node's attributes (selects e.g. the GELU variant). ``store``: the tables to
    use (the shipped ones by default). Returns a tensor like ``lower``; raises TableError if the
    op's table fails its hash check.
    """
    if lower.shape != upper.shape:
        lower, upper = torch.broadcast_tensors(lower, upper)
    dtype = lower.dtype if lower.is_floating_point() else torch.float32
    lower, upper = lower.detach().to(dtype), upper.detach().to(dtype)
    mid = lower + (upper - lower) / 2
    split = _split(op)
    if split is not None and split.point == "zero":
        crossing = (lower < 0) & (upper > 0)
        return strictly_inside(torch.where(crossing, torch.zeros_like(mid), mid), lower, upper)
    if split is not None and split.point == "kinks":
        return strictly_inside(_kink_nearest(kink_points(op, attrs or {}), lower, upper, mid),
                               lower, upper)
    table = (store or default_store()).get(table_key(op, attrs))
    if table is None or lower.numel() == 0:
        return strictly_inside(mid, lower, upper)
    # (the fraction t of [l, u] is the table's at [s l, s u]: the same fraction)
    scale = split.scale_of(attrs or {}) if split is not None and split.scale_of else 1.0
    l, u = lower.to(F64) * scale, upper.to(F64) * scale
    inside = (l >= table.lo) & (u <= table.hi) & (l < u)
    t = _interpolate(table, l, u).clamp(T_MIN, 1 - T_MIN)
    l, u = lower.to(F64), upper.to(F64)
    p = torch.where(inside, l + t * (u - l), l + (u - l) / 2).to(dtype)
    return strictly_inside(p, lower, upper)
