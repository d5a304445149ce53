"""The answer of a verification run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Verdict = Literal["sat", "unsat", "unknown", "timeout", "error"]
VERDICTS: tuple[str, ...] = ("sat", "unsat", "unknown", "timeout", "error")


@dataclass(frozen=True, eq=False)
class Counterexample:
    """A validated violation: flattened input x and the output y that onnxruntime computed.

    ``box_distance`` is the tolerance the validation used: how far (absolute, largest
    coordinate) x lies outside the region's real box. 0 when x is inside; positive only where
    the box holds no float32 value and x is the nearest float32 (the VNN-COMP checker accepts
    up to 1e-4; strict mode accepts none).
    """

    x: np.ndarray
    y: np.ndarray
    region: int = 0
    box_distance: float = 0.0


@dataclass(frozen=True, eq=False)
class VerificationResult:
    verdict: Verdict
    counterexample: Counterexample | None = None
    time_s: float = 0.0
    method: str = ""
    message: str = ""
    stats: dict = field(default_factory=dict)
