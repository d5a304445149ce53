"""The answer of a verification run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Verdict = Literal["sat", "unsat", "unknown", "timeout", "error"]
VERDICTS: tuple[str, ...] = ("sat", "unsat", "unknown", "timeout", "error")


@dataclass(frozen=True, eq=False)
class Counterexample:
    """A validated violation: flattened input x and the output y that onnxruntime computed."""

    x: np.ndarray
    y: np.ndarray
    region: int = 0


@dataclass(frozen=True, eq=False)
class VerificationResult:
    verdict: Verdict
    counterexample: Counterexample | None = None
    time_s: float = 0.0
    method: str = ""
    message: str = ""
    stats: dict = field(default_factory=dict)
