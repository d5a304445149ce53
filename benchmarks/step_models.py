"""Models whose activations are steps, as users bring them: binarised nets (Sign activations
after BatchNorm) and int8 QDQ nets (onnxruntime's ``quantize_static``: every activation a
QuantizeLinear, i.e. a Round), each instance verified by ``nncert verify`` in its own process,
optionally against a baseline tree in the same run.

    python -m benchmarks.step_models [--families binarised qdq] [--timeout 30]
        [--dir /tmp/nncert-steps] [--compare /work/before]

Models (torch, random weights, fixed seeds; BatchNorm statistics from a batch of random
images, as if trained): ``binarised``: two MLPs (16x16 input, 3 layers of 100, Sign) and two
CNNs (3x16x16, two conv stages and a dense layer, Sign, max-pool); ``qdq``: two MLPs (256,
100, 100, Relu) and two CNNs (two conv stages, Relu, max-pool) quantised with uint8
activations and int8 weights, calibrated on 64 random images. Specs: the model's own label at
three random images stays under an L_inf ball clipped to [0, 1] (binarised: radii 0.0005,
0.001, 0.002; qdq: 0.002, 0.01, 0.03). Prints one line per instance and the counts and total
seconds per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks import fresh_runs


class _Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x)


def _binarised_mlp(seed: int) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    layers, width = [nn.Flatten()], 256
    for _ in range(3):
        layers += [nn.Linear(width, 100), nn.BatchNorm1d(100), _Sign()]
        width = 100
    return nn.Sequential(*layers, nn.Linear(width, 10)), (1, 1, 16, 16)


def _binarised_cnn(seed: int) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), _Sign(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), _Sign(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.BatchNorm1d(64), _Sign(),
        nn.Linear(64, 10)), (1, 3, 16, 16)


def _float_mlp(seed: int) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 100), nn.ReLU(), nn.Linear(100, 100),
                         nn.ReLU(), nn.Linear(100, 10)), (1, 1, 16, 16)


def _float_cnn(seed: int) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 64, 10)), (1, 3, 16, 16)


def _with_statistics(model: nn.Module, shape: tuple) -> nn.Module:
    """BatchNorm statistics of 256 random images (cumulative averages), then eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(256, *shape[1:], generator=torch.Generator().manual_seed(7)))
    return model.eval()


def _export(model: nn.Module, shape: tuple, path: Path) -> None:
    torch.onnx.export(model, torch.rand(*shape), str(path), input_names=["input"],
                      output_names=["output"], opset_version=13, dynamo=False)


def _quantise(float_path: Path, shape: tuple, path: Path, seed: int) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(seed)
    feeds = iter([{"input": rng.random(shape, dtype=np.float32)} for _ in range(64)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _spec(x: np.ndarray, label: int, eps: float, n_out: int = 10) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(x.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, v in enumerate(x.ravel().tolist()):
        lines.append(f"(assert (>= X_{i} {max(0.0, v - eps):.8f}))")
        lines.append(f"(assert (<= X_{i} {min(1.0, v + eps):.8f}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    return "\n".join(lines) + f"\n(assert (or {others}))\n"


def _models(family: str, folder: Path):
    """(name, onnx path, input shape) per model of ``family``, written to ``folder``."""
    for kind, build in (("mlp", _binarised_mlp if family == "binarised" else _float_mlp),
                        ("cnn", _binarised_cnn if family == "binarised" else _float_cnn)):
        for seed in (0, 1):
            model, shape = build(seed)
            name = f"{family}_{kind}_{seed}"
            path = folder / f"{name}.onnx"
            if family == "binarised":
                _export(_with_statistics(model, shape), shape, path)
            else:
                float_path = folder / f"{name}_float.onnx"
                _export(model.eval(), shape, float_path)
                _quantise(float_path, shape, path, seed)
            yield name, path, shape


RADII = {"binarised": (0.0005, 0.001, 0.002), "qdq": (0.002, 0.01, 0.03)}


def build(families: list[str], folder: Path) -> list[tuple[str, Path, Path]]:
    """(model name, onnx, vnnlib) per instance: three images, three radii per model."""
    import onnxruntime as ort

    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for family in families:
        for name, path, shape in _models(family, folder):
            session = ort.InferenceSession(str(path))
            rng = np.random.default_rng(100 + len(instances))
            for k in range(3):
                x = rng.random(shape, dtype=np.float32)
                label = int(np.argmax(session.run(None, {"input": x})[0]))
                for eps in RADII[family]:
                    spec = folder / f"{name}_img{k}_eps{eps}.vnnlib"
                    spec.write_text(_spec(x, label, eps))
                    instances.append((name, path, spec))
    return instances


def main() -> None:
    fresh_runs.main(__doc__.splitlines()[0], list(RADII), "/tmp/nncert-steps", build)

if __name__ == "__main__":
    main()
