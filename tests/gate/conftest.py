"""Fixtures for the gate tests: a digits MLP trained once per session, data files."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn (dev extra) provides the digits data")
sys.path.insert(0, str(Path(__file__).parent))

from digits_model import mlp_onnx, predict, train_digits_mlp  # noqa: E402

N_SAMPLES = 4


@dataclass(frozen=True)
class Digits:
    model: Path
    data: Path
    x: np.ndarray  # [N, 64]
    y: np.ndarray  # [N]
    layers: list

    def logits(self, x: np.ndarray) -> np.ndarray:
        return predict(self.layers, np.asarray(x, dtype=np.float64).reshape(-1, 64))


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Digits:
    """The trained model, and the N_SAMPLES correctly classified test samples with the
    largest logit margins (so that a small eps is certifiable)."""
    layers, x, y = train_digits_mlp()
    logits = predict(layers, x)
    top2 = np.sort(logits, axis=1)[:, -2:]
    ok = np.flatnonzero(logits.argmax(1) == y)
    idx = ok[np.argsort(top2[ok, 0] - top2[ok, 1])][:N_SAMPLES]
    d = tmp_path_factory.mktemp("digits")
    np.savez(d / "digits.npz", x=x[idx], y=y[idx])
    return Digits(mlp_onnx(layers, d / "digits_mlp.onnx"), d / "digits.npz", x[idx], y[idx],
                  layers)
