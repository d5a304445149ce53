"""Differential check over every model of a benchmark set: one spec each (the first row of
instances.csv that uses the model), the instance's timeout as the deadline.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.check_survey [ROOT] [BENCHMARK ...]

Prints one line per model (worst error/allowance ratio, points checked, seconds) and a summary
per benchmark; models whose import fails are listed with the reason.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

from bounds.registry import UnsupportedOpError
from verifier.errors import NncertError
from verifier.onnx_import.check import run_check
from verifier.onnx_import.loader import load_model
from verifier.spec import load_spec

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def first_rows(bench: Path) -> list[list[str]]:
    """The first instances.csv row of each model of ``bench``."""
    seen, rows = set(), []
    for row in csv.reader((bench / "instances.csv").open()):
        if row and row[0] not in seen:
            seen.add(row[0])
            rows.append(row)
    return rows


def survey(bench: Path) -> list[tuple[str, str, float, float]]:
    """(model, outcome, worst ratio, seconds) per model of ``bench``."""
    out = []
    for onnx_rel, spec_rel, timeout, *_ in first_rows(bench):
        name = Path(onnx_rel).name
        try:
            model, spec = load_model(bench / onnx_rel), load_spec(bench / spec_rel)
        except (NncertError, UnsupportedOpError) as exc:
            out.append((name, f"import failed: {' '.join(str(exc).split())[:160]}", 0.0, 0.0))
            continue
        start = time.monotonic()
        try:
            report = run_check(model, spec, deadline=start + float(timeout))
            outcome = f"ok {report.points}/{report.planned} points"
            ratio = report.worst_ratio
        except NncertError as exc:
            outcome, ratio = f"REFUSED: {' '.join(str(exc).split())[:300]}", float("inf")
        out.append((name, outcome, ratio, time.monotonic() - start))
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv and Path(argv[0]).is_dir() else DEFAULT_ROOT
    only = set(argv[1:] if argv and Path(argv[0]).is_dir() else argv)
    summary = defaultdict(list)
    for bench in sorted(p for p in root.iterdir() if (p / "instances.csv").is_file()):
        if only and bench.name not in only:
            continue
        for name, outcome, ratio, seconds in survey(bench):
            print(f"{bench.name}\t{name}\t{outcome}\tratio={ratio:.3g}\t{seconds:.2f}s", flush=True)
            summary[bench.name].append((ratio, seconds, outcome))
    print("benchmark\tmodels\tworst_ratio\tmax_s\trefused\timport_failed")
    for bench, rows in summary.items():
        checked = [r for r in rows if not r[2].startswith("import failed")]
        print(f"{bench}\t{len(rows)}\t{max((r[0] for r in checked), default=0):.3g}\t"
              f"{max((r[1] for r in checked), default=0):.2f}\t"
              f"{sum(r[2].startswith('REFUSED') for r in rows)}\t{len(rows) - len(checked)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
