"""Random properties for soundness fuzzing and their VNN-LIB 1.0 text.

A property is input boxes (each x in some box) and one output condition in DNF,
``OR_d AND_k coef[d, k] @ y <= rhs[d, k]`` (the unsafe set). Kinds:

* ``robust``: one box around a point, ``OR_{j != label} y_label - y_j <= rhs``;
* ``linear``: one box, one conjunction of 1-3 random linear rows;
* ``dnf``: one box, 2-3 disjuncts of 1-2 rows;
* ``boxes``: 2-3 boxes sharing a condition of 1-2 disjuncts of 1-2 rows.

Numbers are written with ``repr`` (shortest round-trip form), so the parsed spec holds exactly
the float64 values generated here. The rhs given at generation is a placeholder: the harness
moves every row by one shift so that the property lands at a chosen distance from the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SPEC_KINDS = ("robust", "linear", "dnf", "boxes")


@dataclass(frozen=True)
class PropSpec:
    """Boxes ``[(lower, upper)]`` (flattened, float64) and condition ``coef[D, K, n_out]``,
    ``rhs[D, K]``; ``pairwise`` marks a robust spec whose rows are y_l - y_j."""

    kind: str
    boxes: tuple[tuple[np.ndarray, np.ndarray], ...]
    coef: np.ndarray
    rhs: np.ndarray
    pairwise: bool = False

    def shifted(self, shift: float) -> PropSpec:
        """Every rhs plus ``shift``: each disjunct's optimum max_k(coef y - rhs) drops by it."""
        return replace(self, rhs=self.rhs + shift)


def _box(centre: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    eps = rng.uniform(0.01, 0.3) * (rng.uniform(0.5, 1.0, centre.size) if rng.random() < 0.5
                                    else 1.0)
    return centre - eps, centre + eps


def random_prop(kind: str, n_in: int, n_out: int, label_of, rng: np.random.Generator
                ) -> PropSpec:
    """A property of ``kind``; ``label_of(x)`` gives the network's argmax at x (for robust)."""
    centre = np.round(rng.uniform(-1, 1, n_in), 3)
    if kind == "robust":
        label = int(label_of(centre))
        others = [j for j in range(n_out) if j != label]
        coef = np.zeros((len(others), 1, n_out))
        for d, j in enumerate(others):
            coef[d, 0, label], coef[d, 0, j] = 1.0, -1.0
        return PropSpec(kind, (_box(centre, rng),), coef, np.zeros((len(others), 1)), True)
    if kind == "linear":
        d, k, boxes = 1, int(rng.integers(1, 4)), (_box(centre, rng),)
    elif kind == "dnf":
        d, k, boxes = int(rng.integers(2, 4)), int(rng.integers(1, 3)), (_box(centre, rng),)
    elif kind == "boxes":
        d, k = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        n_boxes = int(rng.integers(2, 4))
        boxes = tuple(_box(np.round(rng.uniform(-1, 1, n_in), 3), rng) for _ in range(n_boxes))
    else:
        raise ValueError(f"unknown spec kind {kind!r}")
    coef = np.round(rng.normal(size=(d, k, n_out)), 3)
    coef[np.abs(coef).sum(-1) == 0] = 1.0  # no all-zero rows
    return PropSpec(kind, boxes, coef, np.zeros((d, k)))


def _num(v: float) -> str:
    return repr(float(v))


def row_text(coef: np.ndarray, rhs: float, pairwise: bool) -> str:
    nz = np.flatnonzero(coef)
    if pairwise and rhs == 0.0:  # the VNN-COMP form: (<= Y_label Y_j)
        pos, neg = int(np.flatnonzero(coef > 0)[0]), int(np.flatnonzero(coef < 0)[0])
        return f"(<= Y_{pos} Y_{neg})"
    terms = [f"(* {_num(coef[j])} Y_{j})" for j in nz]
    lhs = terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"
    return f"(<= {lhs} {_num(rhs)})"


def box_atoms(lower: np.ndarray, upper: np.ndarray) -> list[str]:
    out = []
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        out += [f"(>= X_{i} {_num(lo)})", f"(<= X_{i} {_num(hi)})"]
    return out


def to_vnnlib(prop: PropSpec, n_in: int, n_out: int, comment: str = "") -> str:
    """VNN-LIB 1.0 text of the property."""
    lines = [f"; {line}" for line in comment.splitlines()]
    lines += [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    if len(prop.boxes) == 1:
        lines += [f"(assert {a})" for a in box_atoms(*prop.boxes[0])]
    else:
        ands = ["(and " + " ".join(box_atoms(lo, hi)) + ")" for lo, hi in prop.boxes]
        lines.append("(assert (or " + " ".join(ands) + "))")
    conj = [[row_text(prop.coef[d, k], prop.rhs[d, k], prop.pairwise)
             for k in range(prop.coef.shape[1])] for d in range(prop.coef.shape[0])]
    if len(conj) == 1:
        lines += [f"(assert {r})" for r in conj[0]]
    else:
        lines.append("(assert (or " + " ".join("(and " + " ".join(c) + ")" for c in conj) + "))")
    return "\n".join(lines) + "\n"
