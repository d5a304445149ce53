"""Models that resample their input image (torch's ``grid_sample``, ONNX GridSample), as users
bring them: fixed warps (a constant grid: rotation and zoom before a classifier) and spatial
transformers (a localisation net predicts the affine map, so the grid depends on the input),
each instance verified by ``nncert verify`` in its own process, optionally against a baseline
tree in the same run.

    python -m benchmarks.spatial_models [--families warp stn] [--timeout 30]
        [--dir /tmp/nncert-spatial] [--compare /work/before]

Models (torch, random weights, fixed seeds): ``warp``: a 1x16x16 image rotated by 10 degrees
and zoomed by 0.9 (bilinear, zeros padding), then an MLP (two models) or a CNN (two models),
exported by the TorchScript exporter at opset 16; ``stn``: theta = identity + 0.1 tanh(W h)
from a small localisation MLP h, then a bilinear sample (border padding) and a classifier;
two MLP and two CNN classifiers, exported by the dynamo exporter (opset 20). Specs: the
model's own label at three random images stays under an L_inf ball clipped to [0, 1], radii
0.001, 0.005, 0.02. Prints one line per instance and the counts and seconds per model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import fresh_runs
from benchmarks.step_models import _spec

SHAPE = (1, 1, 16, 16)


def _classifier(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 64, 10))


class _Warp(nn.Module):
    """A fixed rotation and zoom, then the classifier."""

    def __init__(self, kind: str):
        super().__init__()
        a = math.radians(10.0)
        theta = 0.9 * torch.tensor([[[math.cos(a), -math.sin(a), 0.0],
                                     [math.sin(a), math.cos(a), 0.0]]])
        self.register_buffer("grid", F.affine_grid(theta, list(SHAPE), align_corners=False))
        self.head = _classifier(kind)

    def forward(self, x):
        return self.head(F.grid_sample(x, self.grid, mode="bilinear", padding_mode="zeros",
                                       align_corners=False))


class _Stn(nn.Module):
    """theta = identity + 0.1 tanh(localisation(x)): the grid depends on the input."""

    def __init__(self, kind: str):
        super().__init__()
        self.loc = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 6))
        self.register_buffer("eye", torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]))
        self.head = _classifier(kind)

    def forward(self, x):
        theta = (self.eye + 0.1 * torch.tanh(self.loc(x))).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(SHAPE), align_corners=False)
        return self.head(F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                       align_corners=False))


def _export(model: nn.Module, family: str, path: Path) -> None:
    x = torch.rand(*SHAPE)
    if family == "warp":
        torch.onnx.export(model, x, str(path), input_names=["input"], output_names=["output"],
                          opset_version=16, dynamo=False)
        return
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"],
                      dynamo=True)
    import onnx

    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=False)  # one file


def _models(family: str, folder: Path):
    """(name, onnx path) per model of ``family``, written to ``folder``."""
    for kind in ("mlp", "cnn"):
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = (_Warp if family == "warp" else _Stn)(kind).eval()
            name = f"{family}_{kind}_{seed}"
            path = folder / f"{name}.onnx"
            _export(model, family, path)
            yield name, path


RADII = (0.001, 0.005, 0.02)


def build(families: list[str], folder: Path) -> list[tuple[str, Path, Path]]:
    """(model name, onnx, vnnlib) per instance: three images, three radii per model."""
    import onnxruntime as ort

    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for family in families:
        for name, path in _models(family, folder):
            session = ort.InferenceSession(str(path))
            feed = session.get_inputs()[0].name
            rng = np.random.default_rng(200 + len(instances))
            for k in range(3):
                x = rng.random(SHAPE, dtype=np.float32)
                label = int(np.argmax(session.run(None, {feed: x})[0]))
                for eps in RADII:
                    spec = folder / f"{name}_img{k}_eps{eps}.vnnlib"
                    spec.write_text(_spec(x, label, eps))
                    instances.append((name, path, spec))
    return instances


def main() -> None:
    fresh_runs.main(__doc__.splitlines()[0], ["warp", "stn"], "/tmp/nncert-spatial", build)


if __name__ == "__main__":
    main()
