"""Model classes the dev sets lack, built here with torch (random weights, fixed seeds), each
verified by ``nncert verify`` in its own process: how a new user's run ends on them.

    .venv/bin/python -m benchmarks.probe_models [--models vit tinyresnet vgg16]
        [--timeout 60] [--dir /tmp/nncert-probes] [--exporter torchscript|dynamo]

* ``vgg16``: VGG16 at ImageNet shape (3x224x224, 138M parameters, a 553 MB ONNX file),
  999 disjuncts (one per other class), 10 pixels moving by 0.05 and the rest pinned to
  values that no float32 represents (decimal text): the memory guard, the final pass's
  pricing and pinned coordinates (session 36).
* ``tinyresnet``: a TinyImageNet-shaped ResNet (3x64x64, ``resnet_proxy``'s BatchNorm
  blocks, 3 stages, 200 classes), 199 disjuncts, eps 1/255 on every pixel.
* ``vit``: a small vision transformer (CIFAR shape, 8x8 patches, 2 blocks of width 48,
  3 heads, Softmax attention), exported at opset 13 so that LayerNorm is written out as
  ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div; eps 1/255 on every pixel.
* ``cgan``: a conditional GAN's generator (Linear, three stride-2 ConvTranspose layers with
  BatchNorm and Relu, Tanh) feeding a discriminator (two stride-2 Convs, LeakyRelu, Linear,
  2 scores), one condition input pinned and 4 latent inputs moving by 0.4: input splitting
  through ConvTranspose and LeakyRelu layers (session 37).
* ``mobilenet``: MobileNetV2/V3-style inverted residual blocks (depthwise convs, BatchNorm,
  ReLU6 as Clip, HardSwish with HardSigmoid squeeze-excite gates), CIFAR shape, eps 1/255
  on every pixel: Clip kink splits and gate products (session 38).
* ``lstm``, ``gru``: sequential MNIST (28 steps of 28 pixels, hidden 64, a linear head on
  the last state), eps 0.01 on every pixel: the recurrent converters' unrolled gates and gate
  products (session 39).
* ``alexnet``: AlexNet's conv, Relu, LRN (the ONNX operator: torch would write its own
  decomposition), max-pool stages at CIFAR shape, eps 1/255 on every pixel: LRN's running
  channel sum (session 42).

Random weights make these figures of behaviour and cost (does every stage run, end on time,
fit in memory), not of tightness. Prints verdict, wall seconds, peak resident memory and
the run's message per model.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.resnet_proxy import build as build_resnet


def _vgg16() -> nn.Module:
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        conv = nn.Conv2d(c, v, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
        c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


def _tinyresnet() -> nn.Module:
    """``resnet_proxy``'s BatchNorm ResNet at TinyImageNet's shape: 3 stages of one block
    (widths 32, 64, 128), 200 classes, no hidden layer."""
    return build_resnet(32, [1, 2, 4], 1, 0, 200)


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, d))


class _Encoder(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm1, self.att = nn.LayerNorm(d), _Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.att(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _ViT(nn.Module):
    def __init__(self, d: int = 48, depth: int = 2, heads: int = 3, patch: int = 8):
        super().__init__()
        self.patch, n = patch, (32 // patch) ** 2
        self.embed = nn.Linear(3 * patch * patch, d)
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.Sequential(*[_Encoder(d, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x):
        b, p, g = x.shape[0], self.patch, 32 // self.patch
        x = x.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, 3 * p * p)
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(x)], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def _trained_statistics(model: nn.Module) -> None:
    """BatchNorm inference statistics of a trained-looking net (random, not the identity)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)


class _CGan(nn.Module):
    def __init__(self, latent: int = 5):
        super().__init__()
        self.fc = nn.Linear(latent, 64 * 4 * 4)

        def up(cin, cout):
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.generator = nn.Sequential(nn.BatchNorm2d(64), nn.ReLU(), *up(64, 32), *up(32, 16),
                                       nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Tanh())
        self.discriminator = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 4, 2, 1),
            nn.BatchNorm2d(32), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(32 * 8 * 8, 2))
        _trained_statistics(self)

    def forward(self, z):
        return self.discriminator(self.generator(self.fc(z).reshape(-1, 64, 4, 4)))


class _InvertedResidual(nn.Module):
    """MobileNetV2/V3's block: 1x1 expand, 3x3 depthwise, [squeeze-excite gate], 1x1
    project, each conv with BatchNorm; a residual sum where the shape allows."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, act, gate: bool):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.BatchNorm2d(hidden), act())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden),
                                       nn.BatchNorm2d(hidden), act())
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, hidden // 4, 1),
                                  nn.ReLU(), nn.Conv2d(hidden // 4, hidden, 1),
                                  nn.Hardsigmoid()) if gate else None
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.depthwise(self.expand(x))
        if self.gate is not None:
            h = h * self.gate(h)
        h = self.project(h)
        return x + h if self.residual else h


class _MobileNet(nn.Module):
    """MobileNetV2/V3-style at CIFAR shape: a stride-2 stem, inverted residual blocks with
    ReLU6 (exported as Clip) and then HardSwish with a HardSigmoid gate, global average
    pooling, 10 classes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(
            _InvertedResidual(16, 48, 24, 2, nn.ReLU6, False),
            _InvertedResidual(24, 72, 24, 1, nn.ReLU6, False),
            _InvertedResidual(24, 96, 32, 2, nn.Hardswish, True),
            _InvertedResidual(32, 128, 32, 1, nn.Hardswish, True))
        self.head = nn.Sequential(nn.Conv2d(32, 64, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(64, 10))
        _trained_statistics(self)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class _SequenceClassifier(nn.Module):
    """An image read row by row (28 steps of 28 pixels) by a recurrent layer, classified from
    its last hidden state: the sequential-MNIST shape of RNN verification papers."""

    def __init__(self, kind: str, hidden: int = 64):
        super().__init__()
        self.rnn, self.head = getattr(nn, kind)(28, hidden), nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(28, 1, 28))
        return self.head(out[-1])


class _LrnFunction(torch.autograd.Function):
    """torch's LocalResponseNorm, exported as the ONNX LRN operator (torch writes its own
    decomposition otherwise: Pad, AveragePool over channels, Pow, Div)."""

    @staticmethod
    def forward(ctx, x):
        return nn.functional.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=2.0)

    @staticmethod
    def symbolic(g, x):
        return g.op("LRN", x, size_i=5, alpha_f=1e-4, beta_f=0.75, bias_f=2.0)


class _Lrn(nn.Module):
    def forward(self, x):
        return _LrnFunction.apply(x)


def _alexnet() -> nn.Module:
    """AlexNet's layer pattern at CIFAR shape: conv, Relu, LRN (AlexNet's k = 2, alpha 1e-4,
    beta 0.75, 5 channels), max pooling, twice, then a dense head."""
    def stage(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), _Lrn(), nn.MaxPool2d(2)]

    return nn.Sequential(*stage(3, 32), *stage(32, 64), nn.Flatten(),
                         nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


def _latent_spec(x: torch.Tensor, label: int, n_out: int, moving, eps: float, digits) -> str:
    """The condition (first input) pinned at x, the latent inputs within x +- ``eps``;
    unsafe when the other score reaches ``label``'s."""
    flat = x.flatten().tolist()
    steps = [0.0] + [eps] * (len(flat) - 1)
    return _box_spec([v - e for v, e in zip(flat, steps, strict=True)],
                     [v + e for v, e in zip(flat, steps, strict=True)], label, n_out)


def _cgan_input(shape) -> torch.Tensor:
    x = torch.zeros(shape)
    x[0, 0] = 1.0  # the condition
    return x


# name -> (builder, input shape, moving pixels (None: all), eps, digits of pinned values,
# [the input (default uniform in [0, 1)), the spec (default _spec_text)])
PROBES = {
    "vgg16": (_vgg16, (1, 3, 224, 224), 10, 0.05, 8),
    "tinyresnet": (_tinyresnet, (1, 3, 64, 64), None, 1 / 255, None),
    "vit": (_ViT, (1, 3, 32, 32), None, 1 / 255, None),
    "cgan": (_CGan, (1, 5), None, 0.4, None, _cgan_input, _latent_spec),
    "mobilenet": (_MobileNet, (1, 3, 32, 32), None, 1 / 255, None),
    "lstm": (lambda: _SequenceClassifier("LSTM"), (1, 784), None, 0.01, None),
    "gru": (lambda: _SequenceClassifier("GRU"), (1, 784), None, 0.01, None),
    "alexnet": (_alexnet, (1, 3, 32, 32), None, 1 / 255, None),
}


def _box_spec(lows: list[float], highs: list[float], label: int, n_out: int,
              text=repr) -> str:
    """VNN-LIB: the input box, unsafe where some other output reaches ``label``'s (one
    disjunct per other output)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lows))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
        lines += [f"(assert (<= X_{i} {text(hi)}))", f"(assert (>= X_{i} {text(lo)}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))"
                                            for j in range(n_out) if j != label) + "))")
    return "\n".join(lines) + "\n"


def _spec_text(x: torch.Tensor, label: int, n_out: int, moving: int | None, eps: float,
               digits: int | None) -> str:
    """Robustness of ``label`` around ``x`` in [0, 1]: one disjunct per other class."""
    flat = x.flatten().tolist()
    free = set(range(len(flat))) if moving is None else set(
        torch.randperm(len(flat), generator=torch.Generator().manual_seed(1))[:moving].tolist())
    steps = [eps if i in free else 0.0 for i in range(len(flat))]
    return _box_spec([max(0.0, v - e) for v, e in zip(flat, steps, strict=True)],
                     [min(1.0, v + e) for v, e in zip(flat, steps, strict=True)], label, n_out,
                     (lambda t: f"{t:.{digits}f}") if digits else repr)


def build(name: str, folder: Path, exporter: str = "torchscript") -> tuple[Path, Path]:
    """The probe's ONNX model and VNN-LIB spec in ``folder`` (made once, then reused).
    ``exporter``: "torchscript" (opset 13, weights inline) or "dynamo" (torch.onnx.export's
    default: its own opset, weights in ``NAME.onnx.data`` beside the model; needs
    onnxscript)."""
    stem = name if exporter == "torchscript" else f"{name}_{exporter}"
    onnx_path, spec_path = folder / f"{stem}.onnx", folder / f"{stem}.vnnlib"
    if onnx_path.exists() and spec_path.exists():
        return onnx_path, spec_path
    builder, shape, moving, eps, digits, *custom = PROBES[name]
    make_input, spec = custom if custom else (torch.rand, _spec_text)
    torch.manual_seed(0)
    model = builder().eval()
    x = make_input(shape)
    with torch.no_grad():
        y = model(x)
    if exporter == "dynamo":
        torch.onnx.export(model, (x,), str(onnx_path), input_names=["input"],
                          output_names=["output"], dynamo=True)
    else:
        torch.onnx.export(model, x, str(onnx_path), input_names=["input"],
                          output_names=["output"], opset_version=13, dynamo=False)
    spec_path.write_text(spec(x, int(y.argmax()), y.shape[-1], moving, eps, digits))
    return onnx_path, spec_path


def run(onnx_path: Path, spec_path: Path, timeout: float) -> dict:
    """``nncert verify`` in a child process: verdict, wall seconds, peak RSS (GB), message."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "verifier.cli", "verify", str(onnx_path),
                           str(spec_path), "--timeout", str(timeout), "-v"],
                          capture_output=True, text=True, timeout=timeout + 120)
    wall = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    lines = proc.stdout.strip().splitlines()
    said = [ln for ln in proc.stderr.splitlines() if "nncert.verify:" in ln]
    return {"verdict": lines[-1] if lines else f"exit {proc.returncode}", "wall_s": wall,
            "peak_gb": peak, "message": said[-1].split("nncert.verify:", 1)[1].strip()
            if said else ""}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["vit", "tinyresnet"],
                        choices=sorted(PROBES))
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/nncert-probes"))
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="how torch writes the models: dynamo is torch.onnx.export's "
                             "default (weights as external data; needs onnxscript)")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        row = run(*build(name, args.dir, args.exporter), args.timeout)
        # (peak: the largest child so far, which is this one where models grow in order)
        print(f"{name:11s} {row['verdict']:8s} {row['wall_s']:7.1f} s  peak {row['peak_gb']:5.2f}"
              f" GB  {row['message'][:150]}", flush=True)


if __name__ == "__main__":
    main()
