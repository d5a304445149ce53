"""From parsed atoms and DNFs to a :class:`Spec`: input boxes, each with its output DNF.

The top-level conjuncts are ``base`` (atoms true in every disjunct) and a list of ``or``s. The
``or``s whose disjuncts only constrain outputs form one *output factor* shared by every region;
the others (over inputs, or mixing input bounds with output constraints as in prop_6 or
nn4sys-style specs) are multiplied out, and their disjuncts are grouped by their input atoms:
each group is one input box, whose condition is (its output parts) x (output factor) x base.
Regions whose boxes are equal are merged; empty boxes are dropped (a spec with no region left
is trivially ``unsat``: its unsafe set is empty).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from verifier.errors import SpecError
from verifier.spec.extras import EXTRA_BASE
from verifier.spec.flatten import first_members, plan_layout, reduce_boxes
from verifier.spec.layout import Layout, trivial_layout
from verifier.spec.parser import Dnf, Parser
from verifier.spec.types import InputRegion, OutputCondition, Spec

log = logging.getLogger(__name__)
MAX_ELEMENTS = 200_000_000  # cap on floats in the normalised spec (boxes plus conditions)
MAX_BOX_VALUES = 1 << 24  # cap on box bounds (boxes x inputs x 2) once input 'or's multiply out


def input_box_count(p: Parser) -> int:
    """How many input boxes the parsed spec's 'or's over inputs multiply out to (an upper
    bound: equal boxes merge later), counted with exact integers before any box is built."""
    return math.prod(len(d) for d in p.ors if any(a < 0 for t in d for a in t))


def check_box_budget(p: Parser, n_in: int, limit: int = MAX_BOX_VALUES) -> None:
    """SpecError when the input boxes would hold more than ``limit`` bounds."""
    boxes = input_box_count(p)
    if boxes * n_in * 2 > limit:
        raise SpecError(f"{p.source or '<spec>'}: spec expands to {boxes} input boxes of {n_in} "
                        f"inputs ({boxes * n_in * 2} bounds), above the limit of {limit}; "
                        "split it into several specs")


def build_spec(p: Parser, version: str) -> tuple[Spec, Layout]:
    """The normalised Spec over the flat layout, and the layout (trivial unless composing)."""
    n_in, n_out = p.decls.sizes()
    src = p.source or "<spec>"
    _check_indices(p, n_in, n_out)
    check_box_budget(p, n_in)
    layout = plan_layout(p, n_in, n_out) if p.compose else trivial_layout(n_in, n_out)
    n_z, n_out = layout.n_z, layout.n_outputs
    if p.false:
        log.info("%s: an assert is constant false: no region, the property holds", src)
        return Spec((), n_z, n_out, version, p.source), layout
    out_ors = [d for d in p.ors if all(a >= 0 for t in d for a in t)]
    in_ors = [d for d in p.ors if not all(a >= 0 for t in d for a in t)]
    terms = _product(in_ors, p.max_terms, src)
    out_factor = _product(out_ors, p.max_terms, src)
    base_x = tuple(a for a in p.base if a < 0)
    base_y = tuple(a for a in p.base if a >= 0)
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for t in terms:
        key = tuple(sorted({a for a in t if a < 0}))
        groups.setdefault(key, []).append(tuple(a for a in t if a >= 0))
    if len(groups) * 2 * n_in > MAX_ELEMENTS:
        raise SpecError(f"{src}: {len(groups)} input regions of {n_in} inputs are too large")
    lower, upper = reduce_boxes(*_boxes(p, n_in, base_x, list(groups)), layout)
    keep = np.all(lower <= upper, axis=1)
    if not keep.all():
        log.warning("%s: %d input region(s) are empty (lower > upper) and dropped",
                    src, int((~keep).sum()))
    _check_bounded(p, lower[keep], upper[keep], src, first_members(layout))
    table = _OutputTable(p, n_out)
    merged: dict[bytes, tuple[int, list]] = {}  # equal boxes are one region
    for g, ys in enumerate(groups.values()):
        if keep[g]:
            key = lower[g].tobytes() + upper[g].tobytes()
            entry = merged.get(key)
            if entry is None:
                merged[key] = (g, list(ys))
            else:
                entry[1].extend(ys)
    conds = table.conditions(
        [_multiply(ys, out_factor, p.max_terms, src) for _, ys in merged.values()], base_y)
    out = [InputRegion(lower[g], upper[g], c)
           for (g, _), c in zip(merged.values(), conds, strict=True) if c.n_disjuncts]
    if not out:
        log.info("%s: no input region left: the property holds trivially", src)
    return Spec(tuple(out), n_z, n_out, version, p.source), layout


def _check_indices(p: Parser, n_in: int, n_out: int) -> None:
    if p.xv and max(p.xv) >= n_in:  # only reachable when 1.0 numbering has gaps
        raise SpecError(f"{p.source or '<spec>'}: input index {max(p.xv)} out of range")
    for row in p.yrows:
        for j, _ in row:
            if n_out <= j < EXTRA_BASE:
                raise SpecError(f"{p.source or '<spec>'}: output index {j} out of range")


def _product(ors: list[Dnf], cap: int, src: str) -> Dnf:
    out: Dnf = [()]
    for d in ors:
        out = _multiply(out, d, cap, src)
    return out


def _multiply(a: Dnf, b: Dnf, cap: int, src: str) -> Dnf:
    if len(b) == 1:
        return [x + b[0] for x in a]
    if len(a) == 1:
        return [a[0] + y for y in b]
    if len(a) * len(b) > cap:
        raise SpecError(f"{src}: the property's DNF has more than {cap} disjuncts "
                        f"({len(a)} x {len(b)} from several 'or' asserts); simplify the spec")
    return [x + y for x in a for y in b]


def _boxes(p: Parser, n_in: int, base_x: tuple, keys: list[tuple]) -> tuple[np.ndarray, ...]:
    """Lower and upper bounds [G, n_in]: base bounds, then each group's own input atoms."""
    xv = np.asarray(p.xv, dtype=np.int64)
    xu = np.asarray(p.xu, dtype=bool)
    xval = np.asarray(p.xval, dtype=np.float64)
    lo = np.full(n_in, -np.inf)
    hi = np.full(n_in, np.inf)
    ids = np.asarray([-a - 1 for a in base_x], dtype=np.int64)
    _apply(lo, hi, xv[ids], xu[ids], xval[ids], None)
    lower = np.tile(lo, (len(keys), 1))
    upper = np.tile(hi, (len(keys), 1))
    if any(keys):
        gid = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
        ids = np.fromiter((-a - 1 for k in keys for a in k), dtype=np.int64, count=len(gid))
        _apply(lower, upper, xv[ids], xu[ids], xval[ids], gid)
    return lower, upper


def _apply(lower, upper, var, is_upper, val, gid) -> None:
    up, dn = is_upper, ~is_upper
    if gid is None:
        np.minimum.at(upper, var[up], val[up])
        np.maximum.at(lower, var[dn], val[dn])
    else:
        np.minimum.at(upper, (gid[up], var[up]), val[up])
        np.maximum.at(lower, (gid[dn], var[dn]), val[dn])


def _check_bounded(p: Parser, lower: np.ndarray, upper: np.ndarray, src: str,
                   members: np.ndarray) -> None:
    bad = ~(np.isfinite(lower) & np.isfinite(upper))
    if bad.any():
        g, i = (int(v[0]) for v in np.nonzero(bad))
        side = "lower" if not np.isfinite(lower[g, i]) else "upper"
        name = p.decls.var_name(2 * int(members[i]))
        where = f" in input region {g}" if len(lower) > 1 else ""
        raise SpecError(f"{src}: unbounded input {name}: no finite {side} bound{where} "
                        "(every input needs a lower and an upper bound)")


class _OutputTable:
    """Dense rows of all output atoms plus one padding row (coef 0, rhs +inf)."""

    def __init__(self, p: Parser, n_out: int):
        n = len(p.yrows)
        self.pad = n
        self.coef = np.zeros((n + 1, n_out))
        rows = np.repeat(np.arange(n), [len(r) for r in p.yrows])
        cols = np.fromiter((j for r in p.yrows for j, _ in r), dtype=np.int64, count=len(rows))
        vals = np.fromiter((c for r in p.yrows for _, c in r), dtype=np.float64, count=len(rows))
        self.coef[rows, cols] = vals
        self.rhs = np.append(np.asarray(p.yb, dtype=np.float64), np.inf)
        self.strict = np.append(np.asarray(p.ys, dtype=bool), False)
        self.n_out = n_out
        self.src = p.source or "<spec>"

    def conditions(self, term_lists: list[Dnf], base_y: tuple[int, ...]) -> list[OutputCondition]:
        """One condition per list of conjunctions (each AND ``base_y``), built in one batch.

        Equal lists share one condition; all conditions are views of stacked arrays.
        """
        unique = list(dict.fromkeys(tuple(t) for t in term_lists))
        terms = [t for u in unique for t in u]
        width = max(1, len(base_y) + max((len(t) for t in terms), default=0))
        if len(terms) * width * (self.n_out + 2) > MAX_ELEMENTS:
            raise SpecError(f"{self.src}: output conditions of {len(terms)} disjuncts x "
                            f"{width} constraints x {self.n_out} outputs are too large")
        pad = (self.pad,) * width
        nb = len(base_y)
        rows = [t + base_y + pad[: width - len(t) - nb] for t in terms]
        idx = np.asarray(rows, dtype=np.int64).reshape(len(terms), width)
        coef, rhs, strict = self.coef[idx], self.rhs[idx], self.strict[idx]
        ends = np.cumsum([len(u) for u in unique])
        n_strict = np.concatenate([[0], np.cumsum(strict.any(axis=1))])
        made = {}
        for u, end in zip(unique, ends.tolist(), strict=True):
            start = end - len(u)
            st = strict[start:end] if n_strict[end] > n_strict[start] else None
            made[u] = OutputCondition(coef[start:end], rhs[start:end], strict=st)
        return [made[tuple(t)] for t in term_lists]
