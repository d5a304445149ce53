"""Random properties for the unusual-model campaign (as ``PropSpec``, written by specs.to_vnnlib).

Kinds (``UNUSUAL_SPEC_KINDS``):

* ``box``: one box around a point;
* ``pinned``: one box in which all but 1-3 coordinates are pinned (lower == upper) to random
  float64 values that no float32 equals, as in sensor-window specs;
* ``boxes``: 2-4 boxes (a disjunction of input boxes, 30 % of them pinned) sharing one
  condition;
* ``disjuncts``: one box and 1,000-5,000 one-row disjuncts;
* ``regions``: 2-3 boxes, each with a condition of its own (``(or (and box cond) ...)``, the
  form of several 2022+ benchmarks).

The condition is either the robustness form (``y_label - y_j <= 0`` for j != label, label the
argmax at the centre) or random linear rows whose thresholds are placed from sampled outputs:
``easy`` inside the sampled range (sampling finds a violation), ``beyond`` below the sampled
minimum by 2-100 % of the sampled range (often unsat, sometimes not), ``near`` within
0.01-2 % of the range of the sampled minimum, either side (answers that hinge on tight bounds,
where a wrong ``unsat`` is likeliest; the harness's local search tests every ``unsat``). Any
kind may be written gzip-compressed (``.vnnlib.gz``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fuzzing.specs import PropSpec, box_atoms, row_text
from fuzzing.unusual_oracle import box_points, ort_outputs

UNUSUAL_SPEC_KINDS = ("box", "pinned", "boxes", "disjuncts", "regions")
SPEC_WEIGHTS = (0.25, 0.25, 0.17, 0.18, 0.15)
PLACEMENTS, PLACEMENT_WEIGHTS = ("easy", "beyond", "near"), (0.3, 0.4, 0.3)
PINNED_BOX_SHARE = 0.3  # of the boxes of a ``boxes`` property
GZIP_SHARE = {"box": 0.25, "pinned": 0.25, "boxes": 0.25, "disjuncts": 0.6, "regions": 0.25}


def not_float32(values: np.ndarray) -> np.ndarray:
    """``values`` nudged (by 1e-12 relative) wherever a float32 happens to equal them."""
    exact = values.astype(np.float32).astype(np.float64) == values
    return np.where(exact, values * (1 + 1e-12) + 1e-13, values)


def _box(centre: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    eps = rng.uniform(0.01, 0.3) * (rng.uniform(0.3, 1.0, centre.size) if rng.random() < 0.5
                                    else 1.0)
    return centre - eps, centre + eps


def _pinned_box(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    centre = not_float32(rng.uniform(-1, 1, n))
    lower, upper = centre.copy(), centre.copy()
    free = rng.choice(n, size=int(rng.integers(1, min(3, n) + 1)), replace=False)
    eps = rng.uniform(0.05, 0.5, free.size)
    lower[free], upper[free] = centre[free] - eps, centre[free] + eps
    return lower, upper


def random_boxes(kind: str, n: int, rng) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The input boxes of a property of ``kind`` (``boxes``: some may be pinned ones)."""
    if kind == "pinned":
        return (_pinned_box(n, rng),)
    count = {"boxes": int(rng.integers(2, 5)), "regions": int(rng.integers(2, 4))}.get(kind, 1)
    centres = [rng.uniform(-1, 1, n) for _ in range(count)]
    if rng.random() < 0.5:
        centres = [np.round(c, 3) for c in centres]
    pinned = rng.random(count) < (PINNED_BOX_SHARE if count > 1 else 0.0)
    return tuple(_pinned_box(n, rng) if pin else _box(c, rng)
                 for c, pin in zip(centres, pinned, strict=True))


def _robust(n_out: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    others = [j for j in range(n_out) if j != label]
    coef = np.zeros((len(others), 1, n_out))
    for d, j in enumerate(others):
        coef[d, 0, label], coef[d, 0, j] = 1.0, -1.0
    return coef, np.zeros((len(others), 1))


def _place(vals: np.ndarray, rng, placement: str) -> np.ndarray:
    """Thresholds from sampled row values ``vals[S, D, K]`` (module doc: easy / beyond /
    near)."""
    lo, hi = vals.min(0), vals.max(0)
    span = np.maximum(hi - lo, 1e-3)
    if placement == "easy":
        q = rng.uniform(0.1, 0.9, lo.shape)
    elif placement == "near":
        q = np.exp(rng.uniform(np.log(1e-4), np.log(2e-2), lo.shape))
        q *= np.where(rng.random(lo.shape) < 0.5, -1.0, 1.0)
    else:
        q = -rng.uniform(0.02, 1.0, lo.shape)
    return lo + q * span


def _rows(kind: str, n_out: int, rng) -> np.ndarray:
    if kind == "disjuncts":
        d = int(rng.integers(1000, 5001))
        coef = np.zeros((d, 1, n_out))
        pairs = np.stack([rng.choice(n_out, 2, replace=False) for _ in range(d)])
        coef[np.arange(d), 0, pairs[:, 0]] = 1.0
        coef[np.arange(d), 0, pairs[:, 1]] = -np.round(rng.uniform(0.2, 2.0, d), 3)
        return coef
    d, k = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    coef = np.round(rng.normal(size=(d, k, n_out)), 3)
    coef[np.abs(coef).sum(-1) == 0] = 1.0
    return coef


def _condition(kind: str, boxes: tuple, onnx_bytes: bytes, input_shape, n_out: int, rng
               ) -> tuple[PropSpec, str]:
    """A condition for ``boxes`` placed from outputs sampled in them (module doc)."""
    pts = np.concatenate([box_points(lo, hi, 48, 16, rng)[0] for lo, hi in boxes])
    ys = ort_outputs(onnx_bytes, pts, input_shape)
    if kind != "disjuncts" and rng.random() < 0.4:
        centre = (boxes[0][0] + boxes[0][1]) / 2
        label = int(np.argmax(ort_outputs(onnx_bytes, centre[None], input_shape)[0]))
        coef, rhs = _robust(n_out, label)
        return PropSpec(kind, boxes, coef, rhs, pairwise=True), "robust"
    coef = _rows(kind, n_out, rng)
    vals = np.einsum("dko,so->sdk", coef, ys)
    placement = str(rng.choice(PLACEMENTS, p=PLACEMENT_WEIGHTS))
    rhs = _place(vals, rng, placement)
    if kind == "disjuncts" and placement == "beyond" and rng.random() < 0.3:
        d = int(rng.integers(len(rhs)))  # one reachable row hidden among thousands
        rhs[d] = _place(vals[:, d:d + 1], rng, "easy")[0]
        placement = "beyond+one"
    return PropSpec(kind, boxes, coef, rhs), placement


def random_unusual_parts(kind: str, onnx_bytes: bytes, input_shape, n_out: int, rng
                         ) -> tuple[tuple[PropSpec, ...], str]:
    """A property of ``kind`` as one-box parts (box and its condition; the property is
    violated when some part is), and how its thresholds were placed."""
    boxes = random_boxes(kind, int(np.prod(input_shape)), rng)
    if kind != "regions":
        prop, placement = _condition(kind, boxes, onnx_bytes, input_shape, n_out, rng)
        return tuple(replace(prop, boxes=(box,)) for box in boxes), placement
    drawn = [_condition(kind, (box,), onnx_bytes, input_shape, n_out, rng) for box in boxes]
    placements = sorted({p for _, p in drawn})
    return tuple(p for p, _ in drawn), placements[0] if len(placements) == 1 else "mixed"


def _condition_text(part: PropSpec) -> str:
    conj = [[row_text(part.coef[d, k], part.rhs[d, k], part.pairwise)
             for k in range(part.coef.shape[1])] for d in range(part.coef.shape[0])]
    if len(conj) == 1:
        return " ".join(conj[0])
    return "(or " + " ".join("(and " + " ".join(c) + ")" for c in conj) + ")"


def regions_vnnlib(parts: tuple[PropSpec, ...], n_in: int, n_out: int, comment: str) -> str:
    """VNN-LIB 1.0 text with one ``(and box condition)`` per part under a single ``or``."""
    lines = [f"; {line}" for line in comment.splitlines()]
    lines += [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    ands = ["(and " + " ".join(box_atoms(*p.boxes[0])) + " " + _condition_text(p) + ")"
            for p in parts]
    lines.append("(assert (or " + " ".join(ands) + "))")
    return "\n".join(lines) + "\n"
