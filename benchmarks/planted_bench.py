"""Falsification on generated instances with a violation planted near a box vertex.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.planted_bench [--sizes 16,32,64]
        [--seeds 5] [--budget 5] [--bab-seconds 20]

Instances come from ``tests/attack/planted.py`` (a thin pocket at a random vertex of a wide
box, and the ``off_vertex`` kind where the vertex itself is safe and the pocket lies beside
it). For each size and seed the script runs ``falsify`` with the whole budget, with and
without the bound-guided phase (``AttackConfig.guided``), and the neuron-split search on the
off-vertex kind with and without seeded attacks (``seeded_attack``), and prints per variant
how many instances it found and the median time to a counterexample. Every counterexample
falsify returns was validated with onnxruntime; the search's are checked in the IR (float64).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bounds.engine.deadline import DeadlineExceeded  # noqa: E402
from tests.attack.planted import mlp_value, planted_instance  # noqa: E402
from verifier.attack.falsify import falsify  # noqa: E402
from verifier.config import AttackConfig  # noqa: E402


def run_falsify(p, guided: bool, budget: float, seed: int) -> float | None:
    """Seconds to a validated counterexample, or None."""
    start = time.monotonic()
    cex = falsify(p.model, p.spec, start + budget, AttackConfig(time_share=1.0, guided=guided),
                  seed=seed, budget_s=budget)
    return None if cex is None else time.monotonic() - start


def run_bab(p, seeded: bool, seconds: float) -> float | None:
    """Seconds until the neuron-split search answers sat (checked in the IR), or None."""
    from verifier.bab.neuron_split import NeuronSplitOptions, NeuronSplitSearch
    from verifier.bab.problem import RegionProblem
    from verifier.bab.progress import Progress
    from verifier.bab.region_attack import region_attack

    region = p.spec.regions[0]
    problem = RegionProblem.from_region(0, region, "cpu", torch.float64)

    def validate(x: torch.Tensor):
        y = mlp_value(p.layers, x.double().numpy())[:, 0]
        return x[int(np.argmin(y))] if y.min() < 0 else None

    start = time.monotonic()
    search = NeuronSplitSearch(p.model.graph, problem, start + seconds,
                               NeuronSplitOptions(seeded_attack=seeded), Progress(), validate,
                               region_attack(p.model.graph, region, 50, 10, "cpu"))
    try:
        out = search.run()
    except DeadlineExceeded:  # a bound pass in flight at the deadline: nothing found in time
        return None
    return time.monotonic() - start if out.verdict == "sat" else None


def _summary(label: str, times: list[float | None]) -> str:
    found = [t for t in times if t is not None]
    med = f"{np.median(found):.2f}s" if found else "-"
    return f"{label:34s} found {len(found):3d} of {len(times):3d}   median {med}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="16,32,64", help="input sizes")
    parser.add_argument("--seeds", type=int, default=5, help="instances per size and kind")
    parser.add_argument("--budget", type=float, default=5.0, help="falsify seconds")
    parser.add_argument("--bab-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(1)
    rows: dict[str, list[float | None]] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        for seed in range(args.seeds):
            for off in (False, True):
                p = planted_instance(n, seed=seed, off_vertex=off)
                kind = "beside" if off else "at"
                for guided in (True, False):
                    key = f"falsify {'guided' if guided else 'unguided'} ({kind} vertex)"
                    rows.setdefault(key, []).append(run_falsify(p, guided, args.budget, seed))
                if off and args.bab_seconds > 0:
                    for seeded in (True, False):
                        key = f"bab {'seeded' if seeded else 'unseeded'} (beside vertex)"
                        rows.setdefault(key, []).append(run_bab(p, seeded, args.bab_seconds))
            print(f"n={n} seed={seed} done", file=sys.stderr, flush=True)
    for key, times in rows.items():
        print(_summary(key, times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
