"""MILP encodings of the ops that choose one of several candidates: ArgMax (the index of a
largest element) and TreeLeaves (the leaf of each tree that holds x). One binary per
candidate that the input bounds leave possible, their sum 1; a single candidate needs none.

* ArgMax over one axis: candidate k (u_k >= max_j l_j) with b_k = 1 satisfies
  x_k >= x_j - (u_j - l_k) (1 - b_k) for every other candidate j, so x_k is a largest
  element; the index is sum_k k b_k. Ties may take either index (the runtime takes the first,
  or the last): a superset of the runtime's choices.
* TreeLeaves: per tree, a binary a_l per leaf some point of x's bounds reaches (sum 1); the
  leaf's box ends inside the bounds name sides x takes, binaries p shared by every tree
  (p = [x_f <= t] or [x_f < t], ordered along each feature, linked to x by big-M), with
  a_l <= p or a_l <= 1 - p; each output is sum_l v_l a_l. The links are closed (x_f = t may
  take either side): the MILP's points are limits of real points that take the same sides
  in every tree, a side's point is never cut off.

Both are exact up to those boundary points, so an infeasible MILP proves ``unsat``; a MILP
point is re-checked with onnxruntime like every other (``verify.py``). With ``margin`` (the
search encoding, never a proof) they keep a relative distance ``margin`` from every boundary
instead: the index's element exceeds every other, x lies inside its leaf's box, so that the
runtime's choice (ties, strict ends, float32 rounding of the point) agrees with the MILP's.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from bounds.engine.deadline import check_deadline
from bounds.graph import Node
from bounds.rules.trees import reachable_leaves
from verifier.milp.model import INF, Expr, MilpModel, sparse_module


def _rows_with(x: Expr, plus: np.ndarray, minus: np.ndarray | None, columns: np.ndarray,
               coefs: np.ndarray) -> Expr:
    """Rows x[plus_i] - x[minus_i] + coefs_i v[columns_i] (``minus`` None: no x[minus])."""
    sp = sparse_module()
    idx = np.union1d(x.idx, columns)
    on = x.on(idx)
    mat, const = on[plus], x.const[plus]
    if minus is not None:
        mat, const = mat - on[minus], const - x.const[minus]
    n = len(plus)
    extra = sp.csr_matrix((coefs, (np.arange(n), np.searchsorted(idx, columns))),
                          shape=(n, len(idx)))
    return Expr(idx, (mat + extra).tocsr(), const)


def _one_of(model: MilpModel, groups: list[np.ndarray]) -> None:
    """sum of each group's binaries = 1."""
    if not groups:
        return
    sp = sparse_module()
    idx = np.concatenate(groups)
    rows = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    mat = sp.csr_matrix((np.ones(len(idx)), (rows, np.arange(len(idx)))),
                        shape=(len(groups), len(idx)))
    model.add_rows(Expr(idx, mat, np.zeros(len(groups))), 1.0, 1.0)


def _choice_expr(size: int, const: np.ndarray, entries: list[tuple]) -> Expr:
    """An output of ``size`` positions: ``const`` plus the (position, binary column, weight)
    triples of ``entries`` (arrays each)."""
    sp = sparse_module()
    if not entries:
        return Expr.constant(const)
    pos, cols, vals = (np.concatenate(part) for part in zip(*entries, strict=True))
    idx = np.unique(cols)
    mat = sp.csr_matrix((vals, (pos, np.searchsorted(idx, cols))), shape=(size, len(idx)))
    return Expr(idx, mat, const)


def argmax_groups(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """[outputs, n]: the flattened input positions each output index is chosen among."""
    axis = int(node.attrs["axis"])
    positions = np.arange(math.prod(in_shape)).reshape(in_shape)
    return np.moveaxis(positions, axis, -1).reshape(-1, in_shape[axis])


def _candidates(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.flatnonzero(upper >= lower.max())


def _gap(margin: float, values: np.ndarray) -> np.ndarray:
    """margin (1 + |values|): the distance the search keeps from a boundary at values."""
    return margin * (1.0 + np.abs(values))


def argmax(model: MilpModel, node: Node, x: Expr, lower: np.ndarray, upper: np.ndarray,
           in_shape: tuple[int, ...], margin: float = 0.0) -> tuple[Expr, int]:
    """(index expression, #binaries) of an ArgMax node."""
    groups = argmax_groups(node, in_shape)
    gap = float(_gap(margin, np.concatenate([lower, upper])).max()) if margin else 0.0
    const = np.zeros(len(groups))
    entries, one_of, n_bin = [], [], 0
    plus, minus, cols, big = [], [], [], []
    for g, pos in enumerate(groups):
        check_deadline()
        cand = _candidates(lower[pos], upper[pos])
        if cand.size == 1:
            const[g] = cand[0]
            continue
        b = model.add_vars(np.zeros(cand.size), np.ones(cand.size), integer=True)
        one_of.append(b)
        n_bin += cand.size
        entries.append((np.full(cand.size, g), b, cand.astype(np.float64)))
        for i, k in enumerate(cand):
            for j in cand:
                m = upper[pos[j]] - lower[pos[k]]
                if j != k and m + gap > 0:  # x_k - x_j - (M + gap) b_k >= -M
                    plus.append(pos[k])
                    minus.append(pos[j])
                    cols.append(b[i])
                    big.append(m)
    _one_of(model, one_of)
    if plus:
        big_arr = np.asarray(big)
        model.add_rows(_rows_with(x, np.asarray(plus), np.asarray(minus), np.asarray(cols),
                                  -(big_arr + gap)), -big_arr, INF)
    return _choice_expr(len(groups), const, entries), n_bin


def argmax_binaries(node: Node, lower: np.ndarray, upper: np.ndarray,
                    in_shape: tuple[int, ...]) -> int:
    """The binaries ``argmax`` would add under these bounds (``_candidates`` per group, at
    once)."""
    groups = argmax_groups(node, in_shape)
    counts = (upper[groups] >= lower[groups].max(axis=1, keepdims=True)).sum(axis=1)
    return int(counts[counts > 1].sum())


def _leaf_parts(node: Node):
    """(box lower ends [L, F], upper ends [L, F], their strictness [L, F] each, values [L, C],
    leaves of each tree)."""
    box_lo, box_hi, values, tree = (np.asarray(node.consts[k]) for k in (1, 2, 3, 4))
    tree = tree.astype(np.int64)
    per_tree = [np.flatnonzero(tree == t) for t in range(int(node.shape[-2]))]
    return (box_lo[..., 0].astype(np.float64), box_hi[..., 0].astype(np.float64),
            box_lo[..., 1] > 0, box_hi[..., 1] > 0, values.astype(np.float64), per_tree)


class _Sides:
    """The shared side binaries of one input row: p = [x_f <= t] ("le") or [x_f < t] ("lt")
    per (feature, threshold, kind) that a candidate leaf's box end names, linked to x
    (closed: x_f <= t where p = 1, x_f >= t where p = 0; with a margin g, x_f <= t - g and
    x_f >= t + g) and ordered along each feature ([x < t] <= [x <= t] <= [x < t'] for
    t < t'). Every tree reads the same sides, so at a threshold that several trees share
    they all take the same branch, as x does."""

    def __init__(self):
        self.keys: dict[tuple[int, float, int], int] = {}  # (f, t, 0 lt / 1 le) -> p index

    def column(self, f: int, t: float, le: bool) -> int:
        return self.keys.setdefault((f, t, int(le)), len(self.keys))

    def add(self, model: MilpModel, x: Expr, base: int, lo, hi, margin: float) -> np.ndarray:
        """The binaries (in ``column`` order), their links to x at positions base + f and
        their order along each feature."""
        keys = list(self.keys)
        p = model.add_vars(np.zeros(len(keys)), np.ones(len(keys)), integer=True)
        f = np.array([k[0] for k in keys])
        t = np.array([k[1] for k in keys])
        g = _gap(margin, t)  # (thresholds are finite: 0 without a margin)
        # p = 1: x_f + (u_f - t + g) p <= u_f; p = 0: x_f + (t + g - l_f) p >= t + g
        model.add_rows(_rows_with(x, base + f, None, p, hi[f] - t + g), -INF, hi[f])
        model.add_rows(_rows_with(x, base + f, None, p, t + g - lo[f]), t + g, INF)
        order = sorted(range(len(keys)), key=lambda i: (keys[i][0], keys[i][1], keys[i][2]))
        pairs = [(a, b) for a, b in itertools.pairwise(order) if keys[a][0] == keys[b][0]]
        if pairs:
            _order_rows(model, p, pairs)
        return p


def _order_rows(model: MilpModel, p: np.ndarray, pairs: list[tuple[int, int]]) -> None:
    """p[a] - p[b] <= 0 for each pair."""
    sp = sparse_module()
    a, b = (np.array(side) for side in zip(*pairs, strict=True))
    n = len(pairs)
    mat = sp.csr_matrix((np.r_[np.ones(n), -np.ones(n)], (np.r_[np.arange(n), np.arange(n)],
                                                          np.r_[a, b])), shape=(n, len(p)))
    model.add_rows(Expr(p, mat, np.zeros(n)), -INF, 0.0)


def leaves(model: MilpModel, node: Node, x: Expr, lower: np.ndarray, upper: np.ndarray,
           margin: float = 0.0) -> tuple[Expr, int]:
    """(the [rows, trees, outputs] leaf values as an expression, #binaries) of TreeLeaves:
    per tree with several reachable leaves, a binary a_l per leaf (sum 1), each at most the
    sides its box's ends name (a_l <= p for x below an upper end, a_l <= 1 - p above a
    lower end: ``_Sides``); one reachable leaf gives its values as constants."""
    box_lo, box_hi, lo_strict, hi_strict, values, per_tree = _leaf_parts(node)
    n_feat = box_lo.shape[1]
    n_trees, n_out = int(node.shape[-2]), int(node.shape[-1])
    n_rows = x.size // n_feat
    const = np.zeros(n_rows * n_trees * n_out)
    entries, one_of, n_bin = [], [], 0
    reach_rows = reachable_leaves(node, lower, upper)
    for r in range(n_rows):
        base = r * n_feat
        lo, hi = lower[base:base + n_feat], upper[base:base + n_feat]
        sides, needs = _Sides(), []  # (leaf binary, side key, 1 for a <= p / -1 for 1 - p)
        for t, members in enumerate(per_tree):
            check_deadline()  # (one tree's leaves at a time: 10^5 leaves take seconds)
            cand = members[reach_rows[r, members]]
            out = (r * n_trees + t) * n_out
            if cand.size == 1:
                const[out:out + n_out] = values[cand[0]]
                continue
            if cand.size == 0 or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                from verifier.milp.encode import MilpUnsupportedError

                raise MilpUnsupportedError(f"TreeLeaves {node.name!r}: tree {t} has no "
                                           "reachable leaf or the input is unbounded")
            a = model.add_vars(np.zeros(cand.size), np.ones(cand.size), integer=True)
            one_of.append(a)
            n_bin += cand.size
            entries.append((np.repeat(out + np.arange(n_out), cand.size),
                            np.tile(a, n_out), values[cand].T.reshape(-1)))
            for i, leaf in enumerate(cand):
                for f in np.flatnonzero(box_hi[leaf] < hi):  # x_f <= t (< t where strict)
                    needs.append((a[i], sides.column(f, box_hi[leaf, f],
                                                     not hi_strict[leaf, f]), 1))
                for f in np.flatnonzero(box_lo[leaf] > lo):  # x_f > t (>= t where not strict)
                    needs.append((a[i], sides.column(f, box_lo[leaf, f],
                                                     bool(lo_strict[leaf, f])), -1))
        if not sides.keys:
            continue
        p = sides.add(model, x, base, lo, hi, margin)
        n_bin += len(p)
        _leaf_rows(model, needs, p)
    _one_of(model, one_of)
    return _choice_expr(len(const), const, entries), n_bin


def _leaf_rows(model: MilpModel, needs: list[tuple[int, int, int]], p: np.ndarray) -> None:
    """a - p <= 0 (sign 1) or a + p <= 1 (sign -1) for each (a, side index, sign)."""
    sp = sparse_module()
    a, side, sign = (np.array(c) for c in zip(*needs, strict=True))
    n = len(needs)
    cols = np.r_[a, p[side]]
    idx = np.unique(cols)
    mat = sp.csr_matrix((np.r_[np.ones(n), -sign.astype(np.float64)],
                         (np.r_[np.arange(n), np.arange(n)], np.searchsorted(idx, cols))),
                        shape=(n, len(idx)))
    model.add_rows(Expr(idx, mat, np.zeros(n)), -INF, np.where(sign > 0, 0.0, 1.0))


def leaf_binaries(node: Node, lower: np.ndarray, upper: np.ndarray) -> int:
    """The leaf binaries ``leaves`` would add under these bounds (its side binaries, at most
    as many, are not counted)."""
    reach = reachable_leaves(node, lower, upper)
    tree = np.asarray(node.consts[4]).astype(np.int64)
    counts = np.stack([np.bincount(tree, weights=row, minlength=int(node.shape[-2]))
                       for row in reach])
    return int(counts[counts > 1].sum())
