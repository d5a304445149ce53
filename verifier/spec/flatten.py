"""Plan the flat layout of a composed query (:class:`verifier.spec.layout.Layout`).

Three steps, run by ``verifier.spec.normalize`` after parsing in compose mode:

1. *Unify* inputs that a top-level assertion equates: ``(= A[i] B[j])`` is the conjunction of
   the rows ``pA - pB <= 0`` and ``pB - pA <= 0`` over their passthroughs; when both stand at
   the top level (true in every disjunct), A[i] and B[j] are one free variable and the two rows
   are dropped. Equalities are measure-zero sets that bounds and attacks cannot use as rows;
   as a shared variable they cost nothing (this is how two networks get shared inputs).
2. Number the free inputs ``z`` in declaration order of their first member.
3. Renumber derived outputs: passthroughs (one per z entry) after the declared values, then
   monomials over base positions (merged powers after unification), and rewrite the output
   rows' columns, adding coefficients that land in the same column.
"""

from __future__ import annotations

import numpy as np

from verifier.spec.extras import EXTRA_BASE, powers
from verifier.spec.layout import Layout, Monomial, trivial_layout


def _passthrough_pair(p, atom: int) -> tuple[int, int] | None:
    """(a, b) when output atom ``atom`` reads ``c * x_a - c * x_b <= 0`` (c > 0)."""
    row = p.yrows[atom]
    if len(row) != 2 or p.yb[atom] != 0.0 or p.ys[atom]:
        return None
    (j1, c1), (j2, c2) = row
    if c1 != -c2 or min(j1, j2) < EXTRA_BASE:
        return None
    k1, k2 = p.extras.kinds[j1 - EXTRA_BASE], p.extras.kinds[j2 - EXTRA_BASE]
    if k1[0] != "x" or k2[0] != "x":
        return None
    return (k1[1], k2[1]) if c1 > 0 else (k2[1], k1[1])


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def unify_inputs(p, n_in: int) -> tuple[np.ndarray, int, list[int]]:
    """(input_index, n_z, base atoms left) after merging top-level input equalities."""
    if not p.extras:
        return np.arange(n_in, dtype=np.int64), n_in, p.base
    pairs = {}
    for a in p.base:
        if a >= 0:
            pair = _passthrough_pair(p, a)
            if pair is not None:
                pairs[pair] = a
    parent = list(range(n_in))
    used = set()
    for (a, b), atom in pairs.items():
        back = pairs.get((b, a))
        if back is not None:
            parent[_find(parent, a)] = _find(parent, b)
            used.update((atom, back))
    index = np.empty(n_in, dtype=np.int64)
    z_of: dict[int, int] = {}
    for i in range(n_in):
        index[i] = z_of.setdefault(_find(parent, i), len(z_of))
    return index, len(z_of), [a for a in p.base if a not in used]


def plan_layout(p, n_in: int, n_values: int) -> Layout:
    """The layout, with ``p.yrows`` renumbered to it and unifying atoms removed from
    ``p.base``. Only called in compose mode."""
    if not p.extras:  # the usual query: nothing derived, nothing to unify
        return trivial_layout(n_in, n_values)
    index, n_z, p.base = unify_inputs(p, n_in)
    used = _used_extras(p)
    passthrough: dict[int, int] = {}  # z entry -> position among passthroughs
    monomials: dict[Monomial, int] = {}
    for e, (kind, what) in enumerate(p.extras.kinds):
        if e not in used:
            continue
        if kind == "x":
            passthrough.setdefault(int(index[what]), len(passthrough))
        else:
            monomials.setdefault(_base_monomial(what, index, n_values), len(monomials))
    n_pass = len(passthrough)
    column: list[int | None] = []
    for e, (kind, what) in enumerate(p.extras.kinds):
        if e not in used:
            column.append(None)  # only in rows no assertion uses any more
        elif kind == "x":
            column.append(n_values + passthrough[int(index[what])])
        else:
            column.append(n_values + n_pass + monomials[_base_monomial(what, index, n_values)])
    if column:
        p.yrows = [_renumber(row, column) for row in p.yrows]
    return Layout(index, n_z, n_values, tuple(passthrough), tuple(monomials))


def _used_extras(p) -> set[int]:
    """Derived variables (numbered from 0) in the output atoms that some conjunct still uses."""
    atoms = {a for a in p.base if a >= 0}
    atoms.update(a for d in p.ors for t in d for a in t if a >= 0)
    return {j - EXTRA_BASE for a in atoms for j, _ in p.yrows[a] if j >= EXTRA_BASE}


def _base_monomial(key, index: np.ndarray, n_values: int) -> Monomial:
    """A monomial over variable codes as ((base position, power), ...), powers merged."""
    merged: dict[int, int] = {}
    for code, k in powers(key):
        pos = code >> 1 if code & 1 else n_values + int(index[code >> 1])
        merged[pos] = merged.get(pos, 0) + k
    return tuple(sorted(merged.items()))


def _renumber(row: tuple, column: list[int | None]) -> tuple:
    if all(j < EXTRA_BASE for j, _ in row):
        return row
    out: dict[int, float] = {}
    for j, c in row:
        col = column[j - EXTRA_BASE] if j >= EXTRA_BASE else j
        if col is not None:
            out[col] = out.get(col, 0.0) + c
    return tuple(sorted((j, c) for j, c in out.items() if c != 0.0))


def reduce_boxes(lower: np.ndarray, upper: np.ndarray,
                 layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Boxes over declared inputs [G, n_in] to boxes over the free inputs [G, n_z]: a shared
    variable lies in the intersection of its members' intervals."""
    if not layout.unified:
        return lower, upper
    g = np.arange(len(lower))[:, None]
    cols = layout.input_index[None, :]
    lo = np.full((len(lower), layout.n_z), -np.inf)
    hi = np.full((len(lower), layout.n_z), np.inf)
    np.maximum.at(lo, (g, cols), lower)
    np.minimum.at(hi, (g, cols), upper)
    return lo, hi


def first_members(layout: Layout) -> np.ndarray:
    """For each free input, the first declared input element that maps to it."""
    first = np.full(layout.n_z, len(layout.input_index), dtype=np.int64)
    np.minimum.at(first, layout.input_index, np.arange(len(layout.input_index)))
    return first
