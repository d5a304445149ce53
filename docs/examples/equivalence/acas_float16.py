"""Smallest max-diff the equivalence gate proves between ACAS Xu nets and their float16 copies.

    OMP_NUM_THREADS=1 python docs/examples/equivalence/acas_float16.py OUT_DIR NET.onnx [...]
        [--eps 0.001,0.01,0.05]

For each net: writes NET_f16.onnx (every weight rounded to float16, stored as float32, so the
copy computes in float32 like the original) and NET_perturbed.onnx (one output-layer weight
+0.01, on the last hidden neuron most active at the first point), then, per region, bisects
(in log scale, between 1e-8 and 1e-1) the smallest D for which ``|f16 - f|_inf < D`` is proved
and the largest refuted by a validated counterexample. Regions: L-inf balls of each eps around
the centres of the input boxes of ACAS Xu properties 1, 3 and 4, and the boxes of properties 3
and 4 themselves. Prints one line per (net, region) and writes OUT_DIR/results.json. The
perturbed copy is then gated at the largest D proved for the net, on the balls of the
smallest eps.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from verifier.config import VerifyConfig
from verifier.gate.equiv_run import EquivalenceProblem, falsified_outcome
from verifier.gate.equivalence import EquivalenceProperty, equivalence_vnnlib
from verifier.gate.gate import SampleOutcome
from verifier.pipeline import verify
from verifier.spec import parse_vnnlib

EPS = (0.001, 0.01, 0.05)
# Input boxes of ACAS Xu properties 1, 3 and 4 (normalised inputs, from the VNN-COMP files).
BOXES = {
    "prop_1": ([0.6, -0.5, -0.5, 0.45, -0.5], [0.679857769, 0.5, 0.5, 0.5, -0.45]),
    "prop_3": ([-0.303531156, -0.009549297, 0.493380324, 0.3, 0.3],
               [-0.298552812, 0.009549297, 0.5, 0.5, 0.5]),
    "prop_4": ([-0.303531156, -0.009549297, 0.0, 0.318181818, 0.083333333],
               [-0.298552812, 0.009549297, 0.0, 0.5, 0.166666667]),
}
STEPS = 7
TIMEOUT = 20.0


def copies(net: Path, out: Path, x: np.ndarray) -> tuple[Path, Path]:
    """The float16-rounded and the one-weight-perturbed copies of ``net``."""
    model = onnx.load(net)
    half = onnx.ModelProto()
    half.CopyFrom(model)
    for t in half.graph.initializer:
        a = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(a.dtype), t.name))
    f16 = out / f"{net.stem}_f16.onnx"
    onnx.save(half, f16)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = x.reshape(len(x), 5) - w["input_AvgImg"].reshape(1, 5)
    for i in range(1, 7):
        h = np.maximum(h @ w[f"Operation_{i}_MatMul_W"] + w[f"Operation_{i}_Add_B"], 0)
    j = int(np.argmax(h.min(0)))  # a neuron active at every point (none dead everywhere)
    # Every hidden neuron off at the points: the output bias is the weight that shows.
    name, index = ("linear_7_MatMul_W", (j, 0)) if h[:, j].min() > 0 else ("linear_7_Add_B", 0)
    print(f"# {net.name}: perturbed {name}[{index}] by +0.01", flush=True)
    bent = onnx.ModelProto()
    bent.CopyFrom(model)
    for t in bent.graph.initializer:
        if t.name == name:
            a = numpy_helper.to_array(t).copy()
            a[index] += 0.01
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    bad = out / f"{net.stem}_perturbed.onnx"
    onnx.save(bent, bad)
    return f16, bad


def gate_once(ref: Path, new: Path, lower: np.ndarray, upper: np.ndarray,
              d: float) -> SampleOutcome:
    """One verification of ``|new - ref|_inf < d`` on the box; the gate's sample outcome."""
    prop = EquivalenceProperty(str(ref), "max-diff", d)
    problem = EquivalenceProblem.load(str(ref), str(new), prop)
    spec = parse_vnnlib(equivalence_vnnlib(lower, upper, prop, problem.k))
    res = verify(problem.merged, spec, VerifyConfig(timeout=TIMEOUT, check_model=False))
    if res.verdict == "sat":
        return falsified_outcome(problem, 0, "r", 0, res.counterexample.x, res.time_s,
                                 res.method, "")
    outcome = {"unsat": "certified"}.get(res.verdict, res.verdict)
    return SampleOutcome(0, "r", 0, outcome, res.time_s, res.method)


def bisect(ref: Path, new: Path, lower: np.ndarray, upper: np.ndarray) -> dict:
    lo, hi = math.log10(1e-8), math.log10(1e-1)  # lo: refuted or assumed, hi: to prove
    proved, refuted, cex_diff, times = None, None, None, []
    for _ in range(STEPS):
        d = 10 ** hi if proved is None else 10 ** ((lo + hi) / 2)
        s = gate_once(ref, new, lower, upper, d)
        times.append(round(s.time_s, 2))
        if s.outcome == "certified":
            proved, hi = d, math.log10(d)
        else:
            if s.outcome == "falsified":
                refuted = d
                cex_diff = float(np.abs(s.cex_y - s.cex_ref_y).max())
            lo = math.log10(d)
            if proved is None:
                break
    return {"proved_d": proved, "refuted_d": refuted, "cex_max_diff": cex_diff,
            "times_s": times}


def regions(eps_list: tuple[float, ...]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, lower, upper): balls around the box centres, then the boxes 3 and 4."""
    out = []
    for eps in eps_list:
        for name, (lo, hi) in BOXES.items():
            c = (np.array(lo) + np.array(hi)) / 2
            out.append((f"{name} centre, eps {eps:g}", c - eps, c + eps))
    out += [(f"{name} box", np.array(lo), np.array(hi)) for name, (lo, hi) in BOXES.items()
            if name != "prop_1"]
    return out


def main(out: str, nets: list[str], eps_list: tuple[float, ...] = EPS) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    centres = np.array([(np.array(lo) + np.array(hi)) / 2 for lo, hi in BOXES.values()])
    rows = []
    for net in map(Path, nets):
        f16, bad = copies(net, out_dir, centres[1:2])
        for name, lower, upper in regions(eps_list):
            t0 = time.monotonic()
            r = bisect(net, f16, lower, upper)
            r.update(net=net.name, region=name, wall_s=round(time.monotonic() - t0, 1))
            rows.append(r)
            print(json.dumps(r), flush=True)
        d = max((r["proved_d"] or 0) for r in rows if r["net"] == net.name)
        for c, box in zip(centres, BOXES, strict=True):
            s = gate_once(net, bad, c - eps_list[0], c + eps_list[0], d)
            row = {"net": net.name, "perturbed": True, "region": f"{box} centre, eps "
                   f"{eps_list[0]:g}", "d": d, "outcome": s.outcome, "time_s": round(s.time_s, 2),
                   "cex_max_diff": None if s.cex_y is None else float(
                       np.abs(s.cex_y - s.cex_ref_y).max())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the copies and results.json")
    parser.add_argument("nets", nargs="+", metavar="NET.onnx")
    parser.add_argument("--eps", default=",".join(f"{e:g}" for e in EPS),
                        help="comma-separated ball radii (default %(default)s)")
    cli = parser.parse_args()
    main(cli.out_dir, cli.nets, tuple(float(v) for v in cli.eps.split(",")))
