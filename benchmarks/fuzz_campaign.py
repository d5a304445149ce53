"""Soundness fuzzing campaign: random small networks and properties, every ``nncert verify``
method against the exact MILP oracle (see fuzzing).

    OMP_NUM_THREADS=1 python -m benchmarks.fuzz_campaign --cases 500 --seed 1 --jobs 1
    python -m benchmarks.fuzz_campaign --case 1:37          # reproduce one case, verbosely

Prints verdict counts per method and per case kind, skips by reason, and every disagreement
with the ``seed:index`` that reproduces it; disagreeing cases are written (ONNX + VNN-LIB +
result.json) under ``--out`` for regression tests. Exit status 1 when any disagreement was found.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository (fuzzing/) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzzing import METHODS, make_case, run_case, save_case  # noqa: E402

log = logging.getLogger("fuzz_campaign")
OVERRUN_S = 1.0  # a method run longer than timeout + this is listed as an overrun


def _one(args: tuple) -> dict:
    seed, index, methods, timeout, out = args
    t0 = time.monotonic()
    try:
        case = make_case(seed, index)
    except Exception as exc:  # a generator failure is the harness's problem: report it
        return {"case_id": f"{seed}:{index}", "gen_error": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.monotonic() - t0, 3)}
    res = run_case(case, methods, timeout)
    if res.disagreements:
        save_case(case, res, out)
    return asdict(res)


def _summary(results: list[dict], methods, wall: float, timeout: float) -> str:
    lines = [f"cases: {len(results)}  wall: {wall:.0f} s"]
    gen_err = [r for r in results if "gen_error" in r]
    done = [r for r in results if "gen_error" not in r]
    lines.append("kinds (net/spec/mode): " + ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(r["kind"] for r in done).items())))
    for part in ("net", "spec", "mode"):
        pos = ("net", "spec", "mode").index(part)
        c = Counter(r["kind"].split("/")[pos] for r in done)
        lines.append(f"  by {part}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    lines.append("truth: " + ", ".join(f"{k} {v}" for k, v in sorted(
        Counter(r["truth"] or f"skipped ({r['skip'] or 'oracle-inconsistent'})"
                for r in done).items())))
    lines.append("oracle verdicts: " + ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(r["oracle"] for r in done).items())))
    for m in methods:
        c = Counter(r["verdicts"].get(m, "-") for r in done)
        times = [r["times"].get(m, 0.0) for r in done]
        over = sum(t > timeout + OVERRUN_S for t in times)
        lines.append(f"method {m:<10} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
                     + f"  (total {sum(times):.0f} s, max {max(times, default=0):.1f} s, "
                     f"{over} over timeout+{OVERRUN_S:g} s)")
    for m in methods:
        paths = Counter(r["notes"].get(m, "-") for r in done if r["verdicts"].get(m) != "error")
        lines.append(f"  {m} answered by: " + ", ".join(f"{k} {v}" for k, v in
                                                       sorted(paths.items())))
    by_net = defaultdict(Counter)
    for r in done:
        for m in methods:
            v = r["verdicts"].get(m)
            if r["truth"] and v == r["truth"]:
                by_net[r["kind"].split("/")[0]][m] += 1
    for net, c in sorted(by_net.items()):
        lines.append(f"  {net}: agreeing definite answers " + ", ".join(
            f"{m} {c[m]}" for m in methods))
    slow = sorted(((r["times"].get(m, 0.0), r["case_id"], m) for r in done for m in methods),
                  reverse=True)
    lines += [f"  overrun {cid} {m}: {t:.1f} s" for t, cid, m in slow[:5]
              if t > timeout + OVERRUN_S]
    errors = [(r["case_id"], m, r["notes"].get(m)) for r in done for m in methods
              if r["verdicts"].get(m) == "error"]
    lines.append(f"errors: {len(errors)} (method), {len(gen_err)} (generator)")
    lines += [f"  error {cid} {m}: {note}" for cid, m, note in errors[:20]]
    lines += [f"  generator error {r['case_id']}: {r['gen_error']}" for r in gen_err[:20]]
    bad = [r for r in done if r["disagreements"]]
    lines.append(f"DISAGREEMENTS: {len(bad)}")
    for r in bad:
        lines.append(f"  case {r['case_id']} ({r['kind']}, {r['arch']}, margin "
                     f"{r['margin']:.3e}): " + "; ".join(r["disagreements"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=2.0, help="per method and case (s)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=Path("fuzz_failures"))
    ap.add_argument("--json", type=Path, help="write every case result here (JSON lines)")
    ap.add_argument("--case", help="run one case SEED:INDEX and print its details")
    ap.add_argument("--summarize", type=Path, nargs="+", help="summarise --json files, run nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    methods = tuple(m for m in args.methods.split(",") if m)
    if args.summarize:
        rows = [json.loads(line) for f in args.summarize for line in f.read_text().splitlines()]
        print(_summary(rows, methods, 0.0, args.timeout))
        return 1 if any(r.get("disagreements") for r in rows) else 0
    if args.case:
        seed, index = (int(v) for v in args.case.split(":"))
        case = make_case(seed, index)
        print(case.vnnlib)
        print(json.dumps(asdict(run_case(case, methods, args.timeout)), indent=1))
        return 0
    jobs = [(args.seed, i, methods, args.timeout, args.out)
            for i in range(args.start, args.start + args.cases)]
    start = time.monotonic()
    results = []
    sink = args.json.open("w") if args.json else None
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    it = pool.map(_one, jobs) if pool else map(_one, jobs)
    for n, res in enumerate(it, 1):
        results.append(res)
        if sink:
            sink.write(json.dumps(res, default=str) + "\n")
            sink.flush()
        if res.get("disagreements") or res.get("gen_error"):
            print(f"[{n}] case {res['case_id']}: {res.get('disagreements') or res['gen_error']}",
                  flush=True)
        elif n % 25 == 0:
            print(f"[{n}/{len(jobs)}] {time.monotonic() - start:.0f} s", flush=True)
    if pool:
        pool.shutdown()
    if sink:
        sink.close()
    print(_summary(results, methods, time.monotonic() - start, args.timeout))
    return 1 if any(r.get("disagreements") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
