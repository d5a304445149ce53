"""Falsify every known-sat instance of the dev benchmarks and print a table per benchmark.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.falsify_known_sat [--budget 10]
        [--only acasxu,mnistfc] [--limit N] [--seed 0] [--verbose] [--no-guided]
        [--method auto] [--names FILE] [--no-adaptive-attack] [--no-seeded-attack]

For each row of ``<benchmark>/expected.csv`` with ``expected == sat``: import the model, parse the
spec, run ``verifier.attack.falsify`` with a fixed time budget (the whole budget goes to the
attack), and count a success only when the counterexample was validated with onnxruntime (and is
re-checked here once more). Instances whose model or spec cannot be loaded are listed separately.
``--no-guided`` turns off the bound-guided starts (``AttackConfig.guided``, the ablation);
``--no-adaptive-attack`` and ``--no-seeded-attack`` the pipeline's BaB settings of those names.

``--method auto`` (or any other method) runs the whole pipeline (``verifier.pipeline.verify``)
instead, on the model as ``nncert verify`` loads it (one the importer refuses but onnxruntime
runs is attacked only), with the instance's own timeout from ``instances.csv`` (``--budget``
then caps it when given as a positive number below it); a ``sat`` answer is re-checked the
same way. ``--names FILE`` keeps only the instances whose ``benchmark onnx vnnlib`` line (paths
as in the csv) is in FILE: rerun the misses of a cheap attack-only pass under ``--method auto``.
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
from verifier.config import METHODS, AttackConfig, BabConfig, VerifyConfig  # noqa: E402
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


def timeouts(bench_dir: Path) -> dict[tuple[str, str], float]:
    """(onnx, vnnlib) as written in ``instances.csv`` -> the instance's timeout (seconds)."""
    path = bench_dir / "instances.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {(r[0].strip(), r[1].strip()): float(r[2]) for r in csv.reader(fh) if len(r) >= 3}


def _selected(names: Path | None) -> set[tuple[str, str, str]] | None:
    if names is None:
        return None
    return {tuple(line.split()[:3]) for line in names.read_text().splitlines()
            if len(line.split()) >= 3}


def _load(onnx_path: Path, vnnlib_path: Path, cache: dict, runnable: bool = False):
    """(model, spec); with ``runnable`` a model the importer refuses but onnxruntime runs
    comes back as the pipeline's OrtModel (attacked only), as ``nncert verify`` loads it."""
    import verifier.onnx_import.converters  # noqa: F401  (register converters before importing)
    from verifier.onnx_import.loader import load_model
    from verifier.pipeline import check_spec_matches, load_runnable_model
    from verifier.spec import load_spec

    if onnx_path not in cache:
        try:
            cache[onnx_path] = (load_runnable_model if runnable else load_model)(onnx_path)
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


def run_instance(onnx_path, vnnlib_path, cache, config, budget, seed,
                 method: str = "attack-only", bab: BabConfig | None = None
                 ) -> tuple[str, float, str]:
    """Returns (status, seconds, note); status is found / missed / load-error / WRONG.
    ``method`` other than "attack-only": the whole pipeline with that ``--method``, ``budget``
    seconds (model loading counts, as in ``nncert verify``)."""
    start = time.monotonic()
    try:
        model, spec = _load(onnx_path, vnnlib_path, cache, runnable=method != "attack-only")
    except Exception as exc:
        return "load-error", 0.0, f"{type(exc).__name__}: {str(exc)[:100]}"
    if method == "attack-only":
        start = time.monotonic()
        cex = falsify(model, spec, start + budget, config, seed=seed, budget_s=budget)
        note = ""
    else:
        from verifier.pipeline import verify

        left = max(1e-3, budget - (time.monotonic() - start))
        result = verify(model, spec, VerifyConfig(timeout=left, method=method, seed=seed,
                                                  attack=config, bab=bab or BabConfig()))
        cex, note = result.counterexample, f"{result.verdict} by {result.method}"
    elapsed = time.monotonic() - start
    if cex is None:
        return "missed", elapsed, note
    if not _recheck(model, spec, cex):
        return "WRONG", elapsed, "counterexample failed the re-check"
    return "found", elapsed, f"region {cex.region}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds per instance (with --method: a cap on the instance's "
                             "timeout; 0: no cap)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--limit", type=int, default=0, help="instances per benchmark (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-guided", action="store_true",
                        help="no bound-guided attack starts (ablation)")
    parser.add_argument("--no-adaptive-attack", action="store_true",
                        help="with --method: no attack share that follows the bounds' promise "
                             "(ablation)")
    parser.add_argument("--no-seeded-attack", action="store_true",
                        help="with --method: BaB attacks from random starts only (ablation)")
    parser.add_argument("--method", default="attack-only", choices=("attack-only", *METHODS),
                        help="attack-only: falsify with --budget; else the whole pipeline")
    parser.add_argument("--names", type=Path, default=None,
                        help="only the 'benchmark onnx vnnlib' lines of this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    pipeline = args.method != "attack-only"
    config = AttackConfig(guided=not args.no_guided) if pipeline else AttackConfig(
        time_share=1.0, guided=not args.no_guided)
    bab = BabConfig(adaptive_attack=not args.no_adaptive_attack,
                    seeded_attack=not args.no_seeded_attack)
    only = {b for b in args.only.split(",") if b}
    names = _selected(args.names)
    table: dict[str, dict[str, list[float]]] = {}
    for bench_dir in sorted(p for p in args.dir.iterdir() if p.is_dir()):
        if only and bench_dir.name not in only:
            continue
        instances = known_sat(bench_dir)[: args.limit or None]
        if not instances:
            continue
        counts: dict[str, list[float]] = defaultdict(list)
        cache: dict = {}
        limits = timeouts(bench_dir)
        for onnx_path, vnnlib_path in instances:
            key = (str(onnx_path.relative_to(bench_dir)), str(vnnlib_path.relative_to(bench_dir)))
            if names is not None and (bench_dir.name, *key) not in names:
                continue
            budget = args.budget
            if pipeline:
                budget = limits.get(key, args.budget)
                budget = min(budget, args.budget) if args.budget > 0 else budget
            status, secs, note = run_instance(onnx_path, vnnlib_path, cache, config,
                                              budget, args.seed, args.method, bab)
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
