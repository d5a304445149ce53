"""Campaign of unusual models (issue 16): random small models with the ops of newer VNN-COMP
entries and random specs (pinned coordinates, several boxes, thousands of disjuncts, gzip); see
fuzzing/unusual_*.py.

    OMP_NUM_THREADS=1 python benchmarks/unusual_campaign.py --cases 100 --timeout 2 --seed 1
    python benchmarks/unusual_campaign.py --case 1:37 --timeout 2   # one case, verbosely
    python benchmarks/unusual_campaign.py --cases 60 --blocks recurrent   # one block family

Checks per case: the import agrees with onnxruntime (or the refusal names the op / the
mismatch), the answer arrives by timeout + 1 s (cases run in a worker process killed on
overrun), every ``sat`` validates independently, no ``unsat`` where sampling finds a violation.
Prints outcome counts per featured op and per spec kind, the problems with their ``seed:index``
reproducers, and the distinct error / refusal messages. Failing cases are saved under ``--out``.
Exit status 1 when any disagreement or overrun was found.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzzing.unusual_cases import make_unusual_case, write_case  # noqa: E402
from fuzzing.unusual_harness import UnusualResult, run_unusual_case  # noqa: E402
from fuzzing.unusual_nets import LARGE_SHARE  # noqa: E402

log = logging.getLogger("unusual_campaign")
OUTCOMES = ("sat", "unsat", "unknown", "timeout", "error", "refused", "killed")
PROBLEMS = ("disagreement", "overrun", "import-mismatch", "import-crash", "import-killed",
            "unclear-refusal", "mismatch-refusal", "internal-error")


def _table(title: str, groups: dict[str, list[dict]]) -> list[str]:
    head = f"{title:<22}{'cases':>6}" + "".join(f"{o:>9}" for o in OUTCOMES) + \
        "   disagree  overrun  import  unclear"
    lines = [head]
    for key in sorted(groups):
        rows = groups[key]
        c = Counter(r["outcome"] for r in rows)
        p = Counter(cls for r in rows for cls in {q.split(":", 1)[0] for q in r["problems"]})
        imp = p["import-mismatch"] + p["import-crash"] + p["import-killed"]
        lines.append(f"{key:<22}{len(rows):>6}" + "".join(f"{c[o]:>9}" for o in OUTCOMES)
                     + f"   {p['disagreement']:>8} {p['overrun']:>8} {imp:>7} "
                       f"{p['unclear-refusal']:>8}")
    return lines


def _signature(message: str) -> str:
    """A message with numbers and generated value names blanked and the list of supported ops
    cut, to group failures by class (op names stay: they route the failure)."""
    text = message.split("; supported:")[0]
    text = re.sub(r"'[A-Za-z]+_\d+'", "'*'", text)
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "#", text)[:160]


def summary(rows: list[dict], wall: float) -> str:
    """The campaign report (module doc)."""
    lines = [f"cases: {len(rows)}  wall: {wall:.0f} s  outcomes: " + ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(r["outcome"] for r in rows).items()))]
    by_op, by_kind = defaultdict(list), defaultdict(list)
    for r in rows:
        for op in r["ops"]:
            by_op[op].append(r)
        by_kind[r["spec_kind"] + (".gz" if r["gz"] else "")].append(r)
        by_kind["placement " + r["placement"]].append(r)
    lines += ["", *_table("featured op", by_op), "", *_table("spec kind", by_kind), ""]
    times = sorted(r["time_s"] for r in rows)
    if times:
        lines.append(f"verify time: median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s"
                     f"; parent wall max {max(r['wall_s'] for r in rows):.2f} s")
    checks = Counter(r["cex_check"].split(":")[0] for r in rows if r["outcome"] == "sat")
    lines.append("sat counterexamples: " + ", ".join(f"{k} {v}" for k, v in sorted(checks.items())))
    for cls in PROBLEMS:
        hit = [r for r in rows if any(p.startswith(cls) for p in r["problems"])]
        lines.append(f"{cls.upper()}: {len(hit)}")
        groups = defaultdict(list)
        for r in hit:
            text = next(p for p in r["problems"] if p.startswith(cls))
            groups[_signature(text)].append(r["case_id"])
        for sig, ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(ids):>4} x {sig}   e.g. {', '.join(ids[:3])}")
    missed = [r["case_id"] for r in rows if r["outcome"] in ("unknown", "timeout", "killed")
              and r["sampled_inside"] >= 0]
    lines.append(f"missed sat (sampling violates, answer unknown/timeout): {len(missed)}"
                 + (f"   e.g. {', '.join(missed[:5])}" if missed else ""))
    for outcome in ("error", "refused", "unknown", "timeout"):
        groups = defaultdict(list)
        for r in rows:
            if r["outcome"] == outcome:
                groups[_signature(r["message"])].append(r["case_id"])
        lines.append(f"{outcome.upper()} messages: {sum(map(len, groups.values()))}")
        for sig, ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(ids):>4} x {sig}   e.g. {', '.join(ids[:3])}")
    return "\n".join(lines)


def _run_slice(indices: list[int], args, sink, lock, results: list) -> None:
    worker = None
    try:
        for index in indices:
            if args.max_wall and time.monotonic() - args.started > args.max_wall:
                return  # no new case past the wall budget; the summary counts what ran
            case = make_unusual_case(args.seed, index, blocks=tuple(args.blocks),
                                     large_share=args.large_share)
            res, worker = run_unusual_case(case, worker, args.timeout)
            row = asdict(res)
            with lock:
                results.append(row)
                if sink:
                    sink.write(json.dumps(row, default=float) + "\n")
                    sink.flush()
                _progress(res, len(results), args)
            if res.problems and args.out:
                folder = args.out / case.case_id.replace(":", "_")
                write_case(case, folder)
                (folder / "result.json").write_text(json.dumps(row, indent=1, default=float))
    finally:
        if worker is not None:
            worker.close()


def _progress(res: UnusualResult, n: int, args) -> None:
    if res.problems:
        print(f"[{n}] {res.case_id} {res.outcome}: {'; '.join(res.problems)[:300]}", flush=True)
    elif n % 25 == 0:
        print(f"[{n}/{args.cases}]", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=2.0, help="verify timeout per case (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes side by side")
    ap.add_argument("--large-share", type=float, default=LARGE_SHARE,
                    help="share of larger models (deadline stress); case ids depend on it")
    ap.add_argument("--max-wall", type=float, default=0.0,
                    help="start no case after this many seconds (0: no limit)")
    ap.add_argument("--json", type=Path, help="write every case result here (JSON lines)")
    ap.add_argument("--out", type=Path, help="save failing cases (model, spec, result) here")
    ap.add_argument("--case", help="run one case SEED:INDEX and print its details")
    ap.add_argument("--blocks", nargs="+", default=[], metavar="BLOCK",
                    help="every case's model made of these blocks, in order (e.g. recurrent)")
    ap.add_argument("--summarize", type=Path, nargs="+", help="summarise --json files only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.summarize:
        rows = [json.loads(line) for f in args.summarize for line in f.read_text().splitlines()]
        print(summary(rows, 0.0))
        return 0
    if args.case:
        seed, index = (int(v) for v in args.case.split(":"))
        case = make_unusual_case(seed, index, blocks=tuple(args.blocks),
                                 large_share=args.large_share)
        print(case.vnnlib[:3000])
        res, worker = run_unusual_case(case, None, args.timeout)
        worker.close()
        print(json.dumps(asdict(res), indent=1, default=float))
        return 1 if res.problems else 0
    indices = list(range(args.start, args.start + args.cases))
    results: list[dict] = []
    lock = threading.Lock()
    sink = args.json.open("w") if args.json else None
    start = args.started = time.monotonic()
    jobs = max(1, min(args.jobs, len(indices)))
    threads = [threading.Thread(target=_run_slice, args=(indices[j::jobs], args, sink, lock,
                                                         results)) for j in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sink:
        sink.close()
    print(summary(results, time.monotonic() - start))
    bad = [r for r in results if any(p.startswith(("disagreement", "overrun"))
                                     for p in r["problems"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
