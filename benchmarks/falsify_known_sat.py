"""Falsify every known-sat instance of the dev benchmarks and print a table per benchmark.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.falsify_known_sat [--budget 10]
        [--only acasxu,mnistfc] [--limit N] [--seed 0] [--verbose]

For each row of ``<benchmark>/expected.csv`` with ``expected == sat``: import the model, parse the
spec, run ``verifier.attack.falsify`` with a fixed time budget (the whole budget goes to the
attack), and count a success only when the counterexample was validated with onnxruntime (and is
re-checked here once more). Instances whose model or spec cannot be loaded are listed separately.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from verifier.attack import falsify  # noqa: E402
from verifier.config import AttackConfig  # noqa: E402
from verifier.validate import VNNCOMP_BOX_TOL, box_distance, run_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path(os.environ.get("NNCERT_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))


def known_sat(bench_dir: Path) -> list[tuple[Path, Path]]:
    """(onnx, vnnlib) paths of the rows labelled sat."""
    path = bench_dir / "expected.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["expected"].strip() == "sat"]
    return [(bench_dir / r["onnx"], bench_dir / r["vnnlib"]) for r in rows]


def _load(onnx_path: Path, vnnlib_path: Path, cache: dict):
    import verifier.onnx_import.converters  # noqa: F401  (register converters before importing)
    from verifier.onnx_import.loader import load_model
    from verifier.pipeline import check_spec_matches
    from verifier.spec import load_spec

    if onnx_path not in cache:
        try:
            cache[onnx_path] = load_model(onnx_path)
        except Exception as exc:  # report and move on: the importer may lack an op
            cache[onnx_path] = exc
    model = cache[onnx_path]
    if isinstance(model, Exception):
        raise model
    spec = load_spec(vnnlib_path)
    check_spec_matches(model, spec)
    return model, spec


def _recheck(model, spec, cex) -> bool:
    """Independent re-check: box membership (within the VNN-COMP checker's tolerance, for
    coordinates whose interval holds no float32) and onnxruntime output."""
    region = spec.regions[cex.region]
    y = run_onnx(model, cex.x.astype(np.float32))
    return (box_distance(cex.x, region) <= VNNCOMP_BOX_TOL and region.condition.holds(y)
            and np.array_equal(y, cex.y))


def run_instance(onnx_path, vnnlib_path, cache, config, budget, seed) -> tuple[str, float, str]:
    """Returns (status, seconds, note); status is found / missed / load-error / WRONG."""
    try:
        model, spec = _load(onnx_path, vnnlib_path, cache)
    except Exception as exc:
        return "load-error", 0.0, f"{type(exc).__name__}: {str(exc)[:100]}"
    start = time.monotonic()
    cex = falsify(model, spec, start + budget, config, seed=seed, budget_s=budget)
    elapsed = time.monotonic() - start
    if cex is None:
        return "missed", elapsed, ""
    if not _recheck(model, spec, cex):
        return "WRONG", elapsed, "counterexample failed the re-check"
    return "found", elapsed, f"region {cex.region}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per instance")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--limit", type=int, default=0, help="instances per benchmark (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    config = AttackConfig(time_share=1.0)
    only = {b for b in args.only.split(",") if b}
    table: dict[str, dict[str, list[float]]] = {}
    for bench_dir in sorted(p for p in args.dir.iterdir() if p.is_dir()):
        if only and bench_dir.name not in only:
            continue
        instances = known_sat(bench_dir)[: args.limit or None]
        if not instances:
            continue
        counts: dict[str, list[float]] = defaultdict(list)
        cache: dict = {}
        for onnx_path, vnnlib_path in instances:
            status, secs, note = run_instance(onnx_path, vnnlib_path, cache, config,
                                              args.budget, args.seed)
            counts[status].append(secs)
            print(f"{bench_dir.name:16s} {onnx_path.name:36s} {vnnlib_path.name:50s} "
                  f"{status:10s} {secs:6.2f}s {note}", flush=True)
        table[bench_dir.name] = counts
    _print_table(table)
    return 1 if any("WRONG" in c for c in table.values()) else 0


def _print_table(table: dict[str, dict[str, list[float]]]) -> None:
    print()
    print(f"{'benchmark':16s} {'sat':>4s} {'found':>6s} {'missed':>7s} {'loaderr':>8s} "
          f"{'wrong':>6s} {'time_s':>8s} {'median_found_s':>15s}")
    totals = defaultdict(int)
    total_time = 0.0
    for name, counts in table.items():
        n = sum(len(v) for v in counts.values())
        t = sum(sum(v) for v in counts.values())
        found = counts.get("found", [])
        med = f"{np.median(found):.2f}" if found else "-"
        row = [len(found), len(counts.get("missed", [])), len(counts.get("load-error", [])),
               len(counts.get("WRONG", []))]
        print(f"{name:16s} {n:4d} {row[0]:6d} {row[1]:7d} {row[2]:8d} {row[3]:6d} {t:8.1f} "
              f"{med:>15s}")
        for key, value in zip(("sat", "found", "missed", "loaderr", "wrong"), [n, *row],
                              strict=True):
            totals[key] += value
        total_time += t
    print(f"{'TOTAL':16s} {totals['sat']:4d} {totals['found']:6d} {totals['missed']:7d} "
          f"{totals['loaderr']:8d} {totals['wrong']:6d} {total_time:8.1f}")


if __name__ == "__main__":
    sys.exit(main())
