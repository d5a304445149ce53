"""``nncert verify`` on generated instances, each in its own process, per tree side by side
(the current checkout and an optional baseline), with counts and seconds per model: the
runner of ``sklearn_models`` and ``step_models``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path


def argmax_spec(center, radius: float, label: int, classes: int, low: float | None = None,
                high: float | None = None) -> str:
    """VNN-LIB: label ``label`` of ``classes`` outputs stays the argmax over the L_inf ball of
    ``radius`` around ``center`` (a numpy array), clipped to [low, high] where given."""
    flat = center.reshape(-1).tolist()
    lines = [f"(declare-const X_{i} Real)" for i in range(len(flat))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, v in enumerate(flat):
        lo = v - radius if low is None else max(low, v - radius)
        hi = v + radius if high is None else min(high, v + radius)
        lines.append(f"(assert (>= X_{i} {lo!r}))")
        lines.append(f"(assert (<= X_{i} {hi!r}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def run(python: str, tree: str | None, onnx_path: Path, spec: Path, timeout: float
        ) -> tuple[str, float]:
    """(verdict, wall seconds) of one ``verify`` with PYTHONPATH=``tree`` (None: as is)."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree
    start = time.perf_counter()
    try:
        out = subprocess.run([python, "-m", "verifier.cli", "verify", str(onnx_path),
                              str(spec), "--timeout", str(timeout)], capture_output=True,
                             text=True, env=env, timeout=timeout + 60, cwd="/")
        lines = out.stdout.strip().splitlines()
        verdict = lines[0].split()[0] if lines else f"error(rc={out.returncode})"
    except subprocess.TimeoutExpired:
        verdict = "killed"
    return verdict, time.perf_counter() - start


def run_instances(instances: list[tuple[str, Path, Path]], python: str, compare: str | None,
                  timeout: float) -> None:
    """Each (model name, onnx, vnnlib) on the current tree, then on ``compare``; one line per
    instance, then the verdict counts and seconds per model and tree."""
    here = str(Path(__file__).resolve().parents[1])
    trees = [("current", here)] + ([("baseline", compare)] if compare else [])
    totals: dict[tuple[str, str], Counter] = {}
    seconds: Counter = Counter()
    for name, onnx_path, spec in instances:
        cells = []
        for label, tree in trees:
            verdict, took = run(python, tree, onnx_path, spec, timeout)
            totals.setdefault((name, label), Counter())[verdict] += 1
            seconds[(name, label)] += took
            cells.append(f"{label} {verdict} {took:.1f}s")
        print(f"{spec.name}: " + " | ".join(cells), flush=True)
    for (name, label), counts in totals.items():
        print(f"{name} [{label}]: {dict(counts)} in {seconds[(name, label)]:.0f} s")


def main(description: str, families: list[str], default_dir: str,
         build: Callable[[list[str], Path], list[tuple[str, Path, Path]]],
         default: list[str] | None = None) -> None:
    """The command line of a generated-instance benchmark: ``--families`` (of ``families``),
    ``--timeout``, ``--dir`` (where ``build(families, dir)`` writes the instances),
    ``--compare`` (a baseline checkout) and ``--nncert-python``; ``default``: the families run
    when none is named (all by default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--families", nargs="*", default=default or families, choices=families)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--dir", type=Path, default=Path(default_dir))
    parser.add_argument("--compare", default=None, help="a baseline checkout (PYTHONPATH)")
    parser.add_argument("--nncert-python", default=sys.executable)
    args = parser.parse_args()
    run_instances(build(args.families, args.dir), args.nncert_python, args.compare,
                  args.timeout)
