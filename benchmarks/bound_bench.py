"""Time IBP, CROWN and alpha-CROWN on each dev-benchmark model and report the bounds reached.

For every model in the chosen benchmark folders, the first instance that uses it is bounded
(its first input region, all spec rows) by each method on each available device; the table
shows the wall time and the worst spec-row lower bound (> 0 would prove that row).

    python -m benchmarks.bound_bench [--benchmarks acasxu eran ...] [--devices cpu cuda]
        [--models REGEX] [--instances N]

``--models`` keeps the models whose file name matches; ``--instances N`` bounds the first N
instances of each model (not just the first), one row per instance, and prints per method the
mean of the worst spec-row bounds over them.
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from pathlib import Path

import torch

DEFAULT_BENCHMARKS = ("acasxu", "eran", "mnistfc", "cifar10_resnet", "verivital", "oval21",
                      "marabou-cifar10", "nonlinear_digits")
METHODS = ("ibp", "crown", "alpha")


def first_instance_per_model(folder: Path, per_model: int = 1,
                             models: str | None = None) -> list[tuple[Path, Path]]:
    """The first ``per_model`` instances of each model (whose name matches ``models``)."""
    count: dict[str, int] = {}
    out = []
    with open(folder / "instances.csv") as f:
        for row in csv.reader(f):
            if not row or count.get(row[0], 0) >= per_model:
                continue
            if models and not re.search(models, Path(row[0]).name):
                continue
            count[row[0]] = count.get(row[0], 0) + 1
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


def run(root: Path, names, devices, per_model: int = 1, models: str | None = None) -> list[dict]:
    from verifier.bab.problem import RegionProblem
    from verifier.onnx_import.loader import load_model
    from verifier.spec import load_spec

    rows, loaded = [], {}
    for name in names:
        for onnx_path, spec_path in first_instance_per_model(root / name, per_model, models):
            if onnx_path not in loaded:
                loaded[onnx_path] = load_model(onnx_path)
            model, spec = loaded[onnx_path], load_spec(spec_path)
            for device in devices:
                problem = RegionProblem.from_region(0, spec.regions[0], device, torch.float64)
                graph = model.graph
                time_method(graph, problem, "ibp", device)  # warm-up (allocations, caches)
                for method in METHODS:
                    seconds, worst = time_method(graph, problem, method, device)
                    rows.append({"benchmark": name, "model": onnx_path.name,
                                 "instance": spec_path.name, "device": device,
                                 "method": method, "time_s": round(seconds, 4),
                                 "worst_lower": f"{worst:.5g}"})
                    print(f"{name:16s} {onnx_path.name:28s} {spec_path.name:24s} {device:4s} "
                          f"{method:5s} {seconds:8.3f}s  worst lower {worst:.5g}", flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    """Per model, device and method: instances, mean worst bound, total time."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["model"], r["device"], r["method"]), []).append(r)
    for (bench, model, device, method), rs in groups.items():
        worst = [float(r["worst_lower"]) for r in rs]
        print(f"summary {bench:14s} {model:28s} {device:4s} {method:5s} n={len(rs):3d} "
              f"mean worst lower {sum(worst) / len(worst):.5g}  "
              f"time {sum(r['time_s'] for r in rs):.3f}s", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
    parser.add_argument("--benchmarks", nargs="*", default=list(DEFAULT_BENCHMARKS))
    parser.add_argument("--devices", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as csv")
    parser.add_argument("--models", default=None,
                        help="keep models whose file name matches this regex")
    parser.add_argument("--instances", type=int, default=1,
                        help="instances per model (default 1: the first)")
    args = parser.parse_args(argv)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = run(args.root, args.benchmarks, devices, args.instances, args.models)
    if args.instances > 1:
        summarize(rows)
    if args.out and rows:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
