"""VNN-LIB 1.0 local-robustness properties.

For a sample ``x`` with label ``t``, the input region is the L-inf ball ``[x - eps, x + eps]``
(intersected with ``[lo, hi]`` when clipping is asked for) and the *unsafe* set (what VNN-LIB
asserts) is "some other class scores at least as high as ``t``":
``(or (and (>= Y_j Y_t)) ...)`` over ``j != t``. The targeted variant writes one property per
target ``j`` with the single constraint ``(>= Y_j Y_t)``. ``unsat`` means the label stays on
top everywhere in the ball (ties count as violations).

Bounds are written with ``repr`` of float64 values, which reads back as the same float64.
Variables ``X_i`` follow the row-major order of the ONNX input, ``Y_j`` that of the output.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verifier.errors import NncertError


@dataclass(frozen=True)
class BallOptions:
    """The perturbation set: L-inf radius ``eps``, optional clip interval ``(lo, hi)``."""

    eps: float
    norm: str = "inf"
    clip: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise NncertError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if self.norm != "inf":
            raise NncertError(f"norm {self.norm!r} is not supported (only inf)")
        if self.clip is not None:
            lo, hi = self.clip
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise NncertError(f"clip needs finite LO <= HI, got {lo!r},{hi!r}")


def box_vnnlib_lines(lower: np.ndarray, upper: np.ndarray, n_outputs: int,
                     comment: str = "") -> list[str]:
    """VNN-LIB 1.0 lines shared by every gate spec: the comment, the declarations of the inputs
    and ``n_outputs`` outputs, and the input box ``[lower, upper]``."""
    lines = [f"; {line}" for line in comment.splitlines()] if comment else []
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    lines.append("")
    for i, (lo, hi) in enumerate(zip(lower.tolist(), upper.tolist(), strict=True)):
        lines.append(f"(assert (>= X_{i} {lo!r}))")
        lines.append(f"(assert (<= X_{i} {hi!r}))")
    lines.append("")
    return lines

def input_box(x: np.ndarray, ball: BallOptions) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (lower, upper) float64 bounds of the ball around one sample."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    lower, upper = flat - ball.eps, flat + ball.eps
    if ball.clip is not None:
        lo, hi = ball.clip
        lower, upper = np.clip(lower, lo, hi), np.clip(upper, lo, hi)
        # A sample outside [lo, hi] would leave an empty box; keep at least the clipped point.
        upper = np.maximum(upper, lower)
    return lower, upper


def robustness_vnnlib(lower: np.ndarray, upper: np.ndarray, label: int, n_outputs: int,
                      target: int | None = None, comment: str = "") -> str:
    """VNN-LIB 1.0 text: the box ``[lower, upper]`` and "label ``label`` is not on top"
    (or, with ``target``, "class ``target`` scores at least as high as ``label``")."""
    if not 0 <= label < n_outputs:
        raise NncertError(f"label {label} outside [0, {n_outputs})")
    if target is not None and (target == label or not 0 <= target < n_outputs):
        raise NncertError(f"target {target} must differ from label {label} and be in range")
    lines = box_vnnlib_lines(lower, upper, n_outputs, comment)
    if target is not None:
        lines.append(f"(assert (>= Y_{target} Y_{label}))")
    else:
        others = [j for j in range(n_outputs) if j != label]
        if not others:
            raise NncertError("a robustness property needs a model with at least 2 outputs")
        lines.append("(assert (or")
        lines += [f"    (and (>= Y_{j} Y_{label}))" for j in others]
        lines.append("))")
    return "\n".join(lines) + "\n"


def write_robustness_specs(model_path: str | Path, dataset, n_outputs: int, ball: BallOptions,
                           out_dir: str | Path, targeted: bool = False,
                           timeout_s: float = 60.0) -> list[Path]:
    """Write one spec per sample (per sample and target with ``targeted``) into ``out_dir``,
    plus ``instances.csv`` (VNN-COMP format, paths relative to it). Returns the spec paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_rel = os.path.relpath(Path(model_path).resolve(), out.resolve())
    written: list[Path] = []
    for i, (x, label) in enumerate(zip(dataset.x, dataset.y.tolist(), strict=True)):
        lower, upper = input_box(x, ball)
        targets = [j for j in range(n_outputs) if j != label] if targeted else [None]
        for target in targets:
            stem = f"{dataset.names[i]}_label{label}" + (f"_target{target}" if targeted else "")
            name = _safe(f"{stem}_eps{ball.eps:g}") + ".vnnlib"
            comment = (f"local robustness of {Path(model_path).name}, sample {dataset.names[i]} "
                       f"(index {i}), label {label}, eps {ball.eps!r} (L-{ball.norm})"
                       + (f", clipped to {list(ball.clip)}" if ball.clip else "")
                       + (f", target {target}" if target is not None else ""))
            path = out / name
            path.write_text(robustness_vnnlib(lower, upper, label, n_outputs, target, comment))
            written.append(path)
    with open(out / "instances.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for path in written:
            w.writerow([model_rel, path.name, f"{timeout_s:g}"])
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
