"""Time IBP, CROWN and alpha-CROWN on each dev-benchmark model and report the bounds reached.

For every model in the chosen benchmark folders, the first instance that uses it is bounded
(its first input region, all spec rows) by each method on each available device; the table
shows the wall time and the worst spec-row lower bound (> 0 would prove that row).

    python -m benchmarks.bound_bench [--benchmarks acasxu eran ...] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

DEFAULT_BENCHMARKS = ("acasxu", "eran", "mnistfc", "cifar10_resnet", "verivital", "oval21",
                      "marabou-cifar10", "nonlinear_digits")
METHODS = ("ibp", "crown", "alpha")


def first_instance_per_model(folder: Path) -> list[tuple[Path, Path]]:
    seen, out = set(), []
    with open(folder / "instances.csv") as f:
        for row in csv.reader(f):
            if not row or row[0] in seen:
                continue
            seen.add(row[0])
            out.append((folder / row[0], folder / row[1]))
    return out


def time_method(graph, problem, method: str, device: str) -> tuple[float, float]:
    from bounds.engine.spec_bounds import BoundOptions, bound_spec
    from bounds.types import Interval

    shape = graph.inputs[0].shape
    box = Interval(problem.lower.reshape(1, *shape), problem.upper.reshape(1, *shape))
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    res = bound_spec(graph, box, problem.coef.unsqueeze(0), problem.rhs.unsqueeze(0),
                     BoundOptions(method=method))
    if device == "cuda":
        torch.cuda.synchronize()
    finite = res.lower[torch.isfinite(res.lower)]
    worst = float(finite.min()) if finite.numel() else float("-inf")
    return time.perf_counter() - start, worst


def run(root: Path, names, devices) -> list[dict]:
    from verifier.bab.problem import RegionProblem
    from verifier.onnx_import.loader import load_model
    from verifier.spec import load_spec

    rows = []
    for name in names:
        for onnx_path, spec_path in first_instance_per_model(root / name):
            model, spec = load_model(onnx_path), load_spec(spec_path)
            for device in devices:
                problem = RegionProblem.from_region(0, spec.regions[0], device, torch.float64)
                graph = model.graph
                time_method(graph, problem, "ibp", device)  # warm-up (allocations, caches)
                for method in METHODS:
                    seconds, worst = time_method(graph, problem, method, device)
                    rows.append({"benchmark": name, "model": onnx_path.name, "device": device,
                                 "method": method, "time_s": round(seconds, 4),
                                 "worst_lower": f"{worst:.5g}"})
                    print(f"{name:16s} {onnx_path.name:40s} {device:4s} {method:5s} "
                          f"{seconds:8.3f}s  worst lower {worst:.5g}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
    parser.add_argument("--benchmarks", nargs="*", default=list(DEFAULT_BENCHMARKS))
    parser.add_argument("--devices", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as csv")
    args = parser.parse_args(argv)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = run(args.root, args.benchmarks, devices)
    if args.out and rows:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
