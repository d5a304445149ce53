"""ResNet proxies of the CIFAR-100 / TinyImageNet benchmarks' shapes (VNN-COMP 2022-2024: BatchNorm
ResNets, eps 1/255-size boxes, a robustness spec over every other class), for measuring bound
passes on mid-size CNNs. Random weights: their IBP grows far faster than a certified-trained
net's, so a proxy measures cost and relative tightness, not what a real instance proves.

    python -m benchmarks.resnet_proxy OUT [--size 32] [--classes 100] [--width 64]
        [--stages 1,2] [--blocks 2] [--hidden 512] [--eps 0.0005] [--margin 1.0]

writes OUT/net.onnx and OUT/net.vnnlib. Session 27's proxies: ``--width 64 --stages 1,2
--hidden 512`` (4 blocks, 28 nodes), ``--width 32 --stages 1,2,4,8 --hidden 256`` (8 blocks),
and the latter with ``--size 64 --classes 200``; all ``--eps 0.0005 --margin 1.0``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def build(width: int, stages: list[int], blocks: int, hidden: int, classes: int) -> nn.Module:
    """Stem conv, ``blocks`` residual blocks per stage (width x the stage's factor, stride 2
    from the second stage on), 2x2 average pool, [Linear, Relu], Linear."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU()]
    c = width
    for stage, factor in enumerate(stages):
        for b in range(blocks):
            layers.append(_Block(c, width * factor, 2 if b == 0 and stage > 0 else 1))
            c = width * factor
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    head = [nn.Linear(4 * c, hidden), nn.ReLU(), nn.Linear(hidden, classes)] if hidden \
        else [nn.Linear(4 * c, classes)]
    net = nn.Sequential(*layers, *head)
    for m in net.modules():  # inference statistics of a trained-looking net
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.3, 0.8)
            m.bias.data.uniform_(-0.2, 0.1)
    return net.eval()


def robustness_spec(x: np.ndarray, label: int, classes: int, eps: float) -> str:
    """VNN-LIB: the box x +- eps within [0, 1], unsafe when some other class scores >= label."""
    flat = x.reshape(-1).astype(np.float64)
    lines = [f"(declare-const X_{i} Real)" for i in range(flat.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, v in enumerate(flat):
        lines.append(f"(assert (>= X_{i} {float(max(0.0, v - eps))!r}))")
        lines.append(f"(assert (<= X_{i} {float(min(1.0, v + eps))!r}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--stages", default="1,2")
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--eps", type=float, default=0.0005)
    p.add_argument("--margin", type=float, default=1.0,
                   help="added to the predicted class's bias (a random net's top two tie)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    net = build(a.width, [int(s) for s in a.stages.split(",")], a.blocks, a.hidden, a.classes)
    x = np.random.default_rng(a.seed).random((1, 3, a.size, a.size)).astype(np.float32)
    with torch.no_grad():
        label = int(net(torch.tensor(x)).argmax())
        net[-1].bias[label] += a.margin
    a.out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.tensor(x), a.out / "net.onnx", input_names=["x"],
                      output_names=["y"], opset_version=13, dynamo=False)
    (a.out / "net.vnnlib").write_text(robustness_spec(x, label, a.classes, a.eps))
    print(f"{a.out}: label {label}, {sum(q.numel() for q in net.parameters())} parameters")


if __name__ == "__main__":
    main()
