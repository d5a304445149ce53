"""Time and peak memory of one bound pass per method, per model, optionally against a
baseline tree in the same run.

For every model of the chosen benchmark folders (first instance that uses it, its first input
region, all spec rows) each pass runs once in a worker process:

    ibp     bound_spec(method="ibp")
    inter   intermediate bounds alone (compute_intermediate, CROWN where relaxations need it)
    crown   bound_spec(method="crown")
    alpha   bound_spec(method="alpha"): 20 iterations on the final bound
    iter    one alpha iteration on the final bound: (5 iterations - 1 iteration) / 4, in
            bound_spec's working dtype where the tree has one (float32 work iterations)
    alpha5  bound_spec(method="alpha", intermediate_alpha_iterations=5): the incomplete
            cascade's last step (alpha on every intermediate value too)
    alphaibp  bound_spec(method="alpha", intermediate="ibp"): alpha's own work over IBP
            intermediates (on large models the CROWN refinements a pass makes depend on the
            time left, so "alpha" there compares different intermediate bounds). The
            fixed-work definition of one alpha pass on such models (TinyYOLO: "alpha" took
            6 to 45 CPU s there, by the time the limit and the load left): the same
            intermediate bounds in every tree, 20 iterations, no refinement to choose

Each pass runs under the engines' deadline (``--limit`` seconds): a pass that does not end in
time reports ``over N s`` instead of hanging; the worker itself is killed at its passes' limits
plus a margin (``killed``). Peak memory is the growth of the process's resident set during the
pass (Linux VmHWM, reset before each pass; CUDA: peak allocated); the speed-up compares
process CPU seconds, which a loaded machine disturbs less than wall time (on a GPU, whose work
those do not count: wall seconds). With ``--compare DIR`` the same worker runs with
``PYTHONPATH=DIR`` (a baseline checkout) right after each model's current-tree worker, so both
see the same load; the table prints both and the speed-up.

    python -m benchmarks.bound_bench [--benchmarks eran yolo_2023 ...] [--models REGEX]
        [--passes ibp crown alpha] [--limit 60] [--compare /work/before] [--devices cpu cuda]
        [--repeat N] [--threads 1] [--out rows.csv]

Workers run torch on one thread unless ``--threads`` says otherwise (CPU seconds then count
work, not threads spinning while they wait for a shared core).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_BENCHMARKS = ("eran", "mnistfc", "cifar10_resnet", "oval21", "marabou-cifar10",
                      "yolo_2023", "metaroom_2023", "carvana_unet_2022", "cctsdb_yolo_2023",
                      "cora_2024")
PASSES = ("ibp", "inter", "crown", "alpha", "iter", "alpha5", "alphaibp")
DEFAULT_PASSES = ("ibp", "inter", "crown", "alpha", "iter")
ITER_PROBE = 5
# Seconds a worker may take beyond its passes' limits (imports, model loading) before it is
# killed.
WORKER_SLACK_S = 120.0


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


# ---------------------------------------------------------------- worker (one model, one tree)

def _peak_reset() -> int:
    """Reset the process's peak resident set; returns the current resident set (kB)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kb("VmRSS")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class _Instance:
    """The model, box and spec matrix of one instance's first region on one device."""

    def __init__(self, onnx_path: str, spec_path: str, device: str):
        import torch

        from bounds.types import Interval
        from verifier.bab.problem import RegionProblem
        from verifier.onnx_import.loader import load_model
        from verifier.spec import load_spec

        self.graph = load_model(Path(onnx_path)).graph
        problem = RegionProblem.from_region(0, load_spec(Path(spec_path)).regions[0], device,
                                            torch.float64)
        shape = self.graph.inputs[0].shape
        self.box = Interval(problem.lower.reshape(1, *shape), problem.upper.reshape(1, *shape))
        self.coef, self.rhs = problem.coef.unsqueeze(0), problem.rhs.unsqueeze(0)
        self.device = device


def _worst(lower) -> float:
    import torch

    finite = lower[torch.isfinite(lower)]
    return float(finite.min()) if finite.numel() else float("-inf")


def _bound(inst: _Instance, method: str, inter_alpha: int = 0, intermediate: str = "auto"
           ) -> float:
    from bounds.engine.spec_bounds import BoundOptions, bound_spec

    options = BoundOptions(method=method, intermediate_alpha_iterations=inter_alpha,
                           intermediate=intermediate)
    return _worst(bound_spec(inst.graph, inst.box, inst.coef, inst.rhs, options).lower)


def _intermediates(inst: _Instance):
    from bounds.engine.intermediate import compute_intermediate
    try:
        from bounds.rules.rewrites import bound_graph
    except ImportError:  # a baseline tree from before the rewrites had one place
        from bounds.rules.softmax import expand_softmax as bound_graph

    return compute_intermediate(bound_graph(inst.graph), inst.box, method="crown")


def _alpha_run(inst: _Instance, inter, iterations: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``optimize_alpha`` on the final bound with ``iterations``
    iterations."""
    import torch

    from bounds.engine.alpha import optimize_alpha

    out = inst.graph.outputs[0]
    coef = inst.coef.reshape(1, inst.coef.shape[1], *out.shape).to(inst.box.lower)
    try:  # the working dtype of bound_spec's alpha loop, where the tree has one
        from bounds.engine.work_dtype import WORK_DTYPE
        extra = {"work_dtype": WORK_DTYPE}
    except ImportError:
        extra = {}
    start, cpu = time.perf_counter(), time.process_time()
    with torch.enable_grad():
        optimize_alpha(inter, out.name, coef, iterations, **extra)
    return time.perf_counter() - start, time.process_time() - cpu


def _run_pass(inst: _Instance, name: str) -> float | None:
    """Run pass ``name``; returns its worst spec-row bound (None: no bound of its own)."""
    if name == "ibp":
        return _bound(inst, "ibp")
    if name == "crown":
        return _bound(inst, "crown")
    if name == "alpha":
        return _bound(inst, "alpha")
    if name == "alpha5":
        return _bound(inst, "alpha", inter_alpha=ITER_PROBE)
    if name == "alphaibp":
        return _bound(inst, "alpha", intermediate="ibp")
    if name == "inter":
        _intermediates(inst)
        return None
    raise ValueError(name)


def _timed(inst: _Instance, name: str, limit: float) -> dict:
    """One pass under the engines' deadline: status, seconds, peak memory (MB), worst bound."""
    import torch

    from bounds.engine.deadline import DeadlineExceeded, engine_deadline

    cuda = inst.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _peak_reset()
    start, cpu = time.perf_counter(), time.process_time()
    row = {"pass": name, "status": "ok", "worst": None}
    try:
        with engine_deadline(time.monotonic() + limit):
            if name == "iter":
                inter = _intermediates(inst)
                one, one_cpu = _alpha_run(inst, inter, 1)
                more, more_cpu = _alpha_run(inst, inter, ITER_PROBE)
                row["seconds"] = (more - one) / (ITER_PROBE - 1)
                row["cpu_s"] = (more_cpu - one_cpu) / (ITER_PROBE - 1)
            else:
                row["worst"] = _run_pass(inst, name)
        if cuda:
            torch.cuda.synchronize()
    except DeadlineExceeded:
        row["status"] = "over"
    except Exception as exc:  # noqa: BLE001 - a benchmark reports every failure and goes on
        row["status"] = f"error: {type(exc).__name__}: {str(exc)[:80]}"
    row.setdefault("seconds", time.perf_counter() - start)
    row.setdefault("cpu_s", time.process_time() - cpu)
    row["mem_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if cuda
                     else max(0, _status_kb("VmHWM") - base) / 1024)
    return row


def worker(onnx_path: str, spec_path: str, device: str, passes: list[str],
           limit: float, threads: int = 0) -> None:
    """Print one JSON line per pass (the parent reads them). Autograd stays on, as in the
    verifier: alpha-CROWN's loop stops after its first pass when its bound has no gradient.
    ``threads`` > 0: torch's intra-op threads (0: torch's default)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    inst = _Instance(onnx_path, spec_path, device)
    _bound(inst, "ibp")  # warm-up (allocations, lazy imports)
    for name in passes:
        print(json.dumps(_timed(inst, name, limit)), flush=True)


# ---------------------------------------------------------------- parent (tables, comparison)

def _spawn(tree: Path | None, onnx: Path, spec: Path, device: str, passes, limit: float,
           threads: int = 0):
    """Rows of a worker run on ``tree`` (None: this checkout)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(onnx), str(spec),
           "--devices", device, "--passes", *passes, "--limit", str(limit),
           "--threads", str(threads)]
    root = str(tree if tree is not None else Path(__file__).resolve().parents[1])
    # (the tree first; the caller's PYTHONPATH after it: packages installed beside the tree)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    timeout = WORKER_SLACK_S + limit * len(passes) * (ITER_PROBE + 1.5)
    rows, status = [], "killed"
    try:
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True,
                              timeout=timeout, check=False)
        last = proc.stderr.strip().splitlines()[-1:] or [""]
        status = f"error: exit {proc.returncode} {last[0][-160:]}"
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    for line in out.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    done = {r["pass"] for r in rows}
    rows += [{"pass": p, "status": status, "seconds": math.nan, "cpu_s": math.nan,
              "mem_mb": math.nan, "worst": None} for p in passes if p not in done]
    return {r["pass"]: r for r in rows}


def _cell(row: dict, limit: float) -> str:
    if row["status"] == "over":
        return f"over {limit:g} s"
    if row["status"] != "ok":
        return row["status"][:100]
    worst = "" if row["worst"] is None else f" {row['worst']:+.4g}"
    return f"{row['seconds']:8.3f}s cpu {row['cpu_s']:7.3f}s {row['mem_mb']:6.0f}MB{worst}"


def _speedup(now: dict, base: dict, device: str = "cpu") -> str:
    """Baseline over current time: process CPU seconds on the CPU (less disturbed by load),
    wall seconds on a GPU (whose work the process's CPU time does not count)."""
    key = "seconds" if device == "cuda" else "cpu_s"
    if now["status"] != "ok" or base["status"] != "ok" or not now[key]:
        return ""
    return f"x{base[key] / now[key]:.2f} ({'wall' if key == 'seconds' else 'cpu'})"


def run(args) -> list[dict]:
    """Every model's passes on every device, the baseline's right after (``--compare``)."""
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    out = []
    for name in args.benchmarks:
        for onnx, spec in first_instance_per_model(args.root / name, args.instances,
                                                   args.models):
            for device in devices:
                for rep in range(args.repeat):
                    out += _measure(args, name, onnx, spec, device, rep)
    return out


def _measure(args, bench: str, onnx: Path, spec: Path, device: str, rep: int) -> list[dict]:
    """One run of each tree (the baseline first on odd repeats), printed and as rows."""
    def spawn(tree):
        return _spawn(tree, onnx, spec, device, args.passes, args.limit, args.threads)

    base = spawn(args.compare) if args.compare and rep % 2 else None
    now = spawn(None)
    if args.compare and base is None:
        base = spawn(args.compare)
    rows = []
    for p in args.passes:
        line = f"{bench:16s} {onnx.name[:26]:26s} {device:4s} {p:8s} {_cell(now[p], args.limit)}"
        row = {"benchmark": bench, "model": onnx.name, "instance": spec.name,
               "device": device, "repeat": rep, "pass": p,
               **{f"now_{k}": v for k, v in now[p].items() if k != "pass"}}
        if base is not None:
            line += f" | before {_cell(base[p], args.limit)} {_speedup(now[p], base[p], device)}"
            row.update({f"before_{k}": v for k, v in base[p].items() if k != "pass"})
        print(line, flush=True)
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> None:
    """Per model, device and pass: the median seconds of each tree over the repeats."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["model"], r["device"], r["pass"]), []).append(r)
    for (bench, model, device, p), rs in groups.items():
        line = f"median {bench:14s} {model[:26]:26s} {device:4s} {p:8s}"
        for tree in ("now", "before"):
            times = sorted(r[f"{tree}_cpu_s"] for r in rs
                           if r.get(f"{tree}_status") == "ok")
            if f"{tree}_status" in rs[0]:
                med = times[len(times) // 2] if times else math.nan
                line += f"  {tree} cpu {med:8.3f}s ({len(times)}/{len(rs)} ok)"
        print(line, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("ONNX", "VNNLIB"), default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
    parser.add_argument("--benchmarks", nargs="*", default=list(DEFAULT_BENCHMARKS))
    parser.add_argument("--models", default=None,
                        help="keep models whose file name matches this regex")
    parser.add_argument("--instances", type=int, default=1, help="instances per model")
    parser.add_argument("--passes", nargs="*", default=list(DEFAULT_PASSES), choices=PASSES)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds per pass")
    parser.add_argument("--devices", nargs="*", default=None)
    parser.add_argument("--compare", type=Path, default=None,
                        help="a baseline checkout: the same passes with PYTHONPATH=DIR")
    parser.add_argument("--repeat", type=int, default=1, help="runs per model (alternating)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (0: torch's default). One by default: "
                        "on a shared machine idle threads spin and their CPU seconds swamp "
                        "the work (ERAN sigmoid alpha5 under load 5: 14 CPU s with 2 "
                        "threads, 1.3 s with one)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as csv")
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, (args.devices or ["cpu"])[0], args.passes, args.limit,
               args.threads)
        return
    rows = run(args)
    if args.repeat > 1:
        summarize(rows)
    if args.out and rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
