"""GenBaB ablation: no nonlinear branching / midpoint points / optimised points, and the
BBPS-style estimate against the width baseline, on nonlinear benchmarks.

Every variant runs the full ``auto`` pipeline (attack, incomplete cascade, neuron-split BaB)
with one ``VerifyConfig.bab`` setting; instances run one after another in a reused worker
process that is killed when it overruns its cap (answer: timeout).

Instances: a VNN-COMP suite folder (``--suite``, with ``--filter`` or ``--open-from``: keep only
instances that a previous ``nncert bench --out`` csv did not settle with the attack or the
incomplete bounds), plus ERAN sigmoid specs at larger radii generated into ``--out``
(``--eran-eps``: radii; the images are the centres of the first ``--eran-count`` shipped
ffnnSIGMOID specs).

Example (the command behind the table in the issue note)::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.genbab_ablation \\
        --suite /work/shared/benchmarks/nonlinear_digits --open-from /tmp/h5_nd_before.csv \\
        --eran /work/shared/benchmarks/eran --eran-eps 0.015 --eran-count 6 \\
        --cap 20 --out /tmp/genbab_ablation
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing as mp
import re
import time
from pathlib import Path

log = logging.getLogger("genbab_ablation")

VARIANTS: dict[str, dict] = {
    "no nonlinear BaB": {"nonlinear": False},
    "midpoint + BBPS": {"points": "midpoint"},
    "optimized + BBPS": {},
    "optimized + width": {"heuristic": "width"},
}
ERAN_EPS0 = 0.012
_BOUND = re.compile(r"\(assert \((<=|>=) X_(\d+) ([-+0-9.eE]+)\)\)")


# ---- instances ----------------------------------------------------------------------------
def suite_instances(folder: Path, pattern: str | None, open_from: Path | None) -> list:
    """(label, onnx, vnnlib) of a suite's instances.csv, optionally filtered."""
    rows = []
    with open(folder / "instances.csv") as f:
        for onnx, vnnlib, *_ in csv.reader(f):
            rows.append((onnx.strip(), vnnlib.strip()))
    if pattern:
        rows = [r for r in rows if re.search(pattern, r[0]) or re.search(pattern, r[1])]
    if open_from is not None:
        with open(open_from) as f:
            settled = {(r["onnx"], r["vnnlib"]) for r in csv.DictReader(f)
                       if r["method"] in ("attack", "incomplete")}
        rows = [r for r in rows if r not in settled]
    return [(f"{folder.name}/{Path(v).stem}", folder / o, folder / v) for o, v in rows]


def eran_specs(folder: Path, eps_list: list[float], count: int, out: Path) -> list:
    """Sigmoid ERAN instances at radii ``eps_list``, written under ``out/eran_specs``."""
    with open(folder / "instances.csv") as f:
        rows = [(o.strip(), v.strip()) for o, v, *_ in csv.reader(f) if "SIGMOID" in o]
    target = out / "eran_specs"
    target.mkdir(parents=True, exist_ok=True)
    result = []
    for onnx, vnnlib in rows[:count]:
        text = (folder / vnnlib).read_text()
        lo, hi = {}, {}
        for op, i, v in _BOUND.findall(text):
            (hi if op == "<=" else lo)[int(i)] = float(v)
        centre = [_centre(lo[i], hi[i]) for i in range(len(lo))]
        keep = "\n".join(line for line in text.splitlines() if not _BOUND.match(line.strip()))
        for eps in eps_list:
            boxes = "\n".join(f"(assert (<= X_{i} {min(1.0, c + eps):.8f}))\n"
                              f"(assert (>= X_{i} {max(0.0, c - eps):.8f}))"
                              for i, c in enumerate(centre))
            name = Path(vnnlib).stem.replace(f"{ERAN_EPS0:.5f}", f"{eps:.5f}")
            path = target / f"{name}.vnnlib"
            path.write_text(keep + "\n" + boxes + "\n")
            result.append((f"eran/{name}", folder / onnx, path))
    return result


def _centre(lo: float, hi: float) -> float:
    """The image pixel behind a shipped box [x - 0.012, x + 0.012] clipped to [0, 1]."""
    if lo <= 0.0:
        return max(0.0, hi - ERAN_EPS0)
    if hi >= 1.0:
        return min(1.0, lo + ERAN_EPS0)
    return (lo + hi) / 2


# ---- running --------------------------------------------------------------------------------
def _worker(conn) -> None:
    from verifier.config import BabConfig, VerifyConfig
    from verifier.pipeline import verify

    conn.send("ready")
    while (task := conn.recv()) is not None:
        start = time.monotonic()
        try:
            config = VerifyConfig(timeout=task["cap"], bab=BabConfig(**task["bab"]))
            res = verify(task["onnx"], task["vnnlib"], config)
            answer = (res.verdict, res.method)
        except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the run
            answer = ("error", repr(exc)[:200])
        conn.send((*answer, time.monotonic() - start))


class _Runner:
    def __init__(self):
        self.proc = self.conn = None

    def run(self, task: dict, hard: float):
        if self.proc is None or not self.proc.is_alive():
            ctx = mp.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            self.proc.start()
            self.conn.recv()
        start = time.monotonic()
        self.conn.send(task)
        if self.conn.poll(hard):
            return self.conn.recv()
        self.close(kill=True)
        return ("timeout", "killed", time.monotonic() - start)

    def close(self, kill: bool = False) -> None:
        if self.proc is not None:
            if not kill:
                self.conn.send(None)
                self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        self.proc = None


def run(instances: list, variants: list[str], cap: float, out: Path) -> list[dict]:
    rows, runner = [], _Runner()
    try:
        for variant in variants:
            for label, onnx, vnnlib in instances:
                task = {"onnx": str(onnx), "vnnlib": str(vnnlib), "cap": cap,
                        "bab": VARIANTS[variant]}
                verdict, method, took = runner.run(task, cap + 10)
                rows.append({"variant": variant, "instance": label, "result": verdict,
                             "method": method, "time_s": round(took, 2)})
                log.info("%s | %s: %s (%s) %.1fs", variant, label, verdict, method, took)
    finally:
        runner.close()
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def table(rows: list[dict], variants: list[str]) -> str:
    """Markdown table: proved / falsified / timeout-or-unknown counts and total time."""
    lines = ["| variant | proved | falsified | timeout/unknown | total time (s) |",
             "|---|---|---|---|---|"]
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        n = {k: sum(r["result"] == k for r in mine) for k in ("unsat", "sat")}
        other = len(mine) - n["unsat"] - n["sat"]
        total = sum(r["time_s"] for r in mine)
        lines.append(f"| {v} | {n['unsat']} | {n['sat']} | {other} | {total:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", type=Path, action="append", default=[])
    ap.add_argument("--filter")
    ap.add_argument("--open-from", type=Path)
    ap.add_argument("--eran", type=Path)
    ap.add_argument("--eran-eps", default="0.015")
    ap.add_argument("--eran-count", type=int, default=6)
    ap.add_argument("--cap", type=float, default=20.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    instances = [i for s in args.suite for i in suite_instances(s, args.filter, args.open_from)]
    if args.eran is not None:
        eps = [float(e) for e in args.eran_eps.split(",")]
        instances += eran_specs(args.eran, eps, args.eran_count, args.out)
    variants = args.variants.split(",")
    rows = run(instances, variants, args.cap, args.out)
    text = table(rows, variants)
    (args.out / "table.md").write_text(text + "\n")
    log.info("%d instances, cap %g s\n%s", len(instances), args.cap, text)


if __name__ == "__main__":
    main()
