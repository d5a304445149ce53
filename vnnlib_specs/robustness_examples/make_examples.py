"""Regenerate the robustness examples: train the tiny digits MLP (needs scikit-learn), export
it, pick samples, and write the specs with ``nncert spec robustness``.

    OMP_NUM_THREADS=1 .venv/bin/python vnnlib_specs/robustness_examples/make_examples.py

Files: digits_mlp.onnx (64-16-10 ReLU MLP, input [1, 64] in [0, 1]), digits_samples.npz
(x [3, 64], y [3]), untargeted/ (eps 0.02, clipped to [0, 1], one spec per sample) and
targeted/ (eps 0.02, sample 0 only, one spec per other class), each with instances.csv.
Then e.g.: nncert gate --model digits_mlp.onnx --data digits_samples.npz --eps 0.02 --clip 0,1
or: nncert radius --model digits_mlp.onnx --data digits_samples.npz --clip 0,1 --max-eps 0.3
--tol 0.005 --out radius.csv --report radius_report   (see docs/ci-gate.md)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "gate")]

from digits_model import mlp_onnx, predict, train_digits_mlp  # noqa: E402

from verifier.gate.cli import main  # noqa: E402


def build() -> None:
    layers, x, y = train_digits_mlp()
    logits = predict(layers, x)
    correct = np.flatnonzero(logits.argmax(1) == y)[:3]
    model = mlp_onnx(layers, HERE / "digits_mlp.onnx")
    data = HERE / "digits_samples.npz"
    np.savez(data, x=x[correct], y=y[correct])
    common = ["spec", "robustness", "--model", str(model), "--data", str(data),
              "--eps", "0.02", "--clip", "0,1"]
    for rc in (main([*common, "--out", str(HERE / "untargeted")]),
               main([*common, "--targeted", "--limit", "1", "--out", str(HERE / "targeted")])):
        if rc:
            raise SystemExit(rc)


if __name__ == "__main__":
    build()
