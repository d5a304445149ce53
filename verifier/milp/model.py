"""A solver-neutral mixed-integer linear model and affine expressions over its variables.

``MilpModel`` holds columns (bounds, integrality) and ranged rows ``lo <= A v <= hi`` in
coordinate form; backends turn it into their own objects. ``Expr`` is a tensor's flattened value
as an affine function of a few model variables: ``value = mat @ v[idx] + const``. Keeping each
expression over the variables it really depends on (a layer's ReLU outputs, say) keeps the
matrices small even when the whole model has thousands of variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

INF = float("inf")


def sparse_module():
    """``scipy.sparse``, which the expressions and the solvers' matrices use."""
    # scipy is imported on first use, not with the module: importing it (0.3 s) delayed every
    # ``auto`` run's size checks (``milp_suits``), which read this package.
    import scipy.sparse as sp

    return sp


@dataclass(frozen=True)
class Expr:
    """``value[n] = mat[n, m] @ v[idx[m]] + const[n]`` (a flattened tensor). ``mat`` is kept
    sparse (CSR; a dense array given is converted): a conv layer's outputs each read a few
    inputs, and dense rows made wide conv layers unencodable (verivital's 27x27x32 Relu layer
    took 4 GB for the identity of its fresh variables alone)."""

    idx: np.ndarray  # int64 [m], sorted model column indices
    mat: sp.csr_matrix  # float64 [n, m]
    const: np.ndarray  # float64 [n]

    def __post_init__(self) -> None:
        sp = sparse_module()
        mat = self.mat
        if not (sp.issparse(mat) and mat.format == "csr" and mat.dtype == np.float64):
            dense = mat if sp.issparse(mat) else np.asarray(mat, dtype=np.float64)
            object.__setattr__(self, "mat", sp.csr_matrix(dense, dtype=np.float64))

    @property
    def size(self) -> int:
        return int(self.const.shape[0])

    @classmethod
    def variables(cls, idx: np.ndarray) -> Expr:
        """The expression that is exactly the variables ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return cls(idx, sparse_module().identity(len(idx), dtype=np.float64, format="csr"),
                   np.zeros(len(idx)))

    @classmethod
    def constant(cls, values: np.ndarray) -> Expr:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        empty = sparse_module().csr_matrix((values.size, 0))
        return cls(np.zeros(0, dtype=np.int64), empty, values)

    def on(self, idx: np.ndarray) -> sp.csr_matrix:
        """``mat`` re-expressed over the (superset, sorted) column list ``idx``."""
        pos = np.searchsorted(idx, self.idx)
        m = self.mat
        return sparse_module().csr_matrix((m.data, pos[m.indices], m.indptr),
                                    shape=(self.size, len(idx)))

    def rows(self, keep: np.ndarray) -> Expr:
        """The sub-expression of the positions ``keep`` (index array or mask)."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        return Expr(self.idx, self.mat[keep], self.const[keep])


def union_idx(exprs: list[Expr]) -> np.ndarray:
    if not exprs:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([e.idx for e in exprs]))


def stack_rows(parts: list[tuple[np.ndarray, Expr]], size: int) -> Expr:
    """An expression of ``size`` positions assembled from (positions, expression) pieces."""
    idx = union_idx([e for _, e in parts])
    rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    const = np.zeros(size)
    for pos, e in parts:
        part = e.on(idx).tocoo()
        rows.append(np.asarray(pos, dtype=np.int64)[part.row])
        cols.append(part.col.astype(np.int64))
        vals.append(part.data)
        const[pos] = e.const
    mat = sparse_module().csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                       np.concatenate(cols))),
                               shape=(size, len(idx)))
    return Expr(idx, mat, const)


@dataclass
class MilpModel:
    """Columns with bounds and integrality; rows ``row_lo <= A v <= row_hi``; minimise ``c v``."""

    col_lo: list[np.ndarray] = field(default_factory=list)
    col_hi: list[np.ndarray] = field(default_factory=list)
    col_int: list[np.ndarray] = field(default_factory=list)
    names: dict[str, np.ndarray] = field(default_factory=dict)
    _rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    _row_lo: list[np.ndarray] = field(default_factory=list)
    _row_hi: list[np.ndarray] = field(default_factory=list)
    n_cols: int = 0
    n_rows: int = 0
    objective: dict[int, float] = field(default_factory=dict)

    def add_vars(self, lower, upper, integer: bool = False, name: str = "") -> np.ndarray:
        """Add ``len(lower)`` columns; returns their indices."""
        lower = np.asarray(lower, dtype=np.float64).reshape(-1)
        upper = np.asarray(upper, dtype=np.float64).reshape(-1)
        n = lower.size
        idx = np.arange(self.n_cols, self.n_cols + n, dtype=np.int64)
        self.col_lo.append(lower)
        self.col_hi.append(upper)
        self.col_int.append(np.full(n, integer))
        self.n_cols += n
        if name:
            self.names[name] = idx
        return idx

    def add_rows(self, expr: Expr, lower, upper) -> None:
        """Add rows ``lower <= expr <= upper`` (the constant part moves to the sides)."""
        lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), (expr.size,)) - expr.const
        hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), (expr.size,)) - expr.const
        part = expr.mat.tocoo()
        keep = part.data != 0
        self._rows.append((part.row[keep].astype(np.int64) + self.n_rows,
                           expr.idx[part.col[keep]], part.data[keep]))
        self._row_lo.append(lo)
        self._row_hi.append(hi)
        self.n_rows += expr.size

    def matrix(self) -> sp.csr_matrix:
        sp = sparse_module()
        if not self._rows:
            return sp.csr_matrix((self.n_rows, self.n_cols))
        r, c, v = (np.concatenate(p) for p in zip(*self._rows, strict=True))
        return sp.csr_matrix((v, (r, c)), shape=(self.n_rows, self.n_cols))

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything a backend needs, as flat arrays (plus the CSR matrix ``A``)."""
        cat = np.concatenate
        cost = np.zeros(self.n_cols)
        for j, w in self.objective.items():
            cost[j] = w
        return {
            "col_lo": cat(self.col_lo) if self.col_lo else np.zeros(0),
            "col_hi": cat(self.col_hi) if self.col_hi else np.zeros(0),
            "integer": cat(self.col_int) if self.col_int else np.zeros(0, dtype=bool),
            "row_lo": cat(self._row_lo) if self._row_lo else np.zeros(0),
            "row_hi": cat(self._row_hi) if self._row_hi else np.zeros(0),
            "cost": cost,
            "A": self.matrix(),
        }

    def copy(self) -> MilpModel:
        """A copy that shares the (never mutated) arrays, so extra rows can be added per solve."""
        return MilpModel(list(self.col_lo), list(self.col_hi), list(self.col_int),
                         dict(self.names), list(self._rows), list(self._row_lo),
                         list(self._row_hi), self.n_cols, self.n_rows, dict(self.objective))

    def with_integers_fixed(self, x: np.ndarray) -> MilpModel:
        """A continuous copy with every integer column fixed at ``round(x)`` (an LP)."""
        m = self.copy()
        lo, hi = np.concatenate(self.col_lo), np.concatenate(self.col_hi)
        ints = np.concatenate(self.col_int)
        lo[ints] = hi[ints] = np.clip(np.round(x[ints]), lo[ints], hi[ints])
        m.col_lo, m.col_hi, m.col_int = [lo], [hi], [np.zeros(self.n_cols, dtype=bool)]
        return m

    @property
    def nnz(self) -> int:
        """Entries of the constraint matrix so far."""
        return int(sum(r[0].size for r in self._rows))

    @property
    def n_binaries(self) -> int:
        return int(sum(int(a.sum()) for a in self.col_int))
