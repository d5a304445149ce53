"""Throughput of the neuron-split (ReLU) branch-and-bound: domains bounded per second.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.relu_bab_bench [--seconds 20]
        [--only mnistfc,eran] [--profile] [--batch N]

For each case below (one hard instance per model of the issue-18 set), the search runs on the
first input region for a fixed time with no attack (a sat instance cannot end it early), and
the line reports domains bounded, steps, the root bound's time and domains/s after the root
(per wall second, and per CPU second of this process: steadier on a shared machine).
``--profile`` prints the top cumulative entries of cProfile for each case. Each technique of
issue 18 item 1 can be switched off alone with ``--set``: ``narrow_dead=false`` (dead Relus
kept), ``work_float32=false``, ``pair_batches=false``, ``relu_multi_split=false``,
``lazy_certify=false``, ``chain_pass=false`` (the general engine's passes in the pair loop on
Linear/Relu chains too). On fully connected Relu chains the defaults are one split per domain
and step and downstream intermediate bounds (session 19); ``--set relu_multi_split=true --set
intermediate=reuse`` gives the earlier defaults there. Item 3:
``nogoods=true`` (learned nogoods, off by default; a second line per case reports them) and
``cuts=true`` (the nogoods as cutting planes in the bounds, with cut trees; that line then
counts the domains bounded with cuts).
``--case mnistfc:onnx/mnist-net_256x4.onnx:vnnlib/prop_3_0.03.vnnlib`` runs other instances.
``--cascade`` runs the bound cascade first as ``verify`` does (its root bounds, its steps) and
counts the checkpoints' CPU seconds from the cascade's start: the measure for changes to the
cascade or the root.

The script only uses interfaces that existed before issue 18 (``NeuronSplitSearch``,
``NeuronSplitOptions``; newer keywords and settings only where the measured tree has them), so
the same file measures the baseline code side by side, at the same time with ``--baseline``:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.relu_bab_bench --baseline /work/before \\
        --seconds 60 --checkpoints 5,10,20 --domain-marks 100,400,1600
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

BENCH = Path(os.environ.get("NNCERT_BENCHMARKS",
                            Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"))

# The engines' deadline comes this long after the search's, so the search ends on its own
# clock and reports its stats.
GRACE_S = 30.0
# (label, benchmark, onnx, vnnlib): instances the bound cascade leaves open.
CASES = (
    ("mnistfc 256x4", "mnistfc", "onnx/mnist-net_256x4.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("eran 9x200", "eran", "onnx/mnist_relu_9_200.onnx",
     "vnnlib/mnist_spec_idx_8098_eps_0.01500.vnnlib"),  # proved at the root: root time only
    ("eran 225", "eran", "onnx/mnist_relu_9_200.onnx",
     "vnnlib/mnist_spec_idx_225_eps_0.01500.vnnlib"),
    ("oval21 base", "oval21", "onnx/cifar_base_kw.onnx",
     "vnnlib/cifar_base_kw-img590-eps0.03228758169934641.vnnlib"),
    ("resnet_2b", "cifar10_resnet", "onnx/resnet_2b.onnx", "vnnlib/prop_2_eps_0.008.vnnlib"),
)


def _cascade(graph, problem, deadline: float, overrides: dict):
    """The bound cascade as ``verify`` runs it before the search (``strategy.region_refuted``,
    with ``strategy.cascade_steps`` where the code measured has it): (refuted, the root bounds
    or None, its CPU s)."""
    from dataclasses import fields

    from bounds.engine.deadline import engine_deadline
    from verifier import strategy
    from verifier.config import BabConfig, VerifyConfig

    began, bounds, steps = time.process_time(), {}, {}
    if hasattr(strategy, "cascade_steps"):
        names = {f.name for f in fields(BabConfig)}
        bab = BabConfig(**{k: v for k, v in overrides.items() if k in names})
        steps["cascade"] = strategy.cascade_steps(graph, VerifyConfig(bab=bab))
        if hasattr(strategy, "cascade_give_up"):  # (alpha loops that stop on their pace)
            steps["give_up"] = strategy.cascade_give_up(graph, VerifyConfig(bab=bab))
    import inspect

    if "bounds" in inspect.signature(strategy.region_refuted).parameters:
        steps["bounds"] = bounds  # (a cascade that hands the root its bounds)
    with engine_deadline(deadline):
        refuted = strategy.region_refuted(graph, problem, deadline, **steps)
    return refuted, bounds.get(problem.index), time.process_time() - began


def run_case(onnx: Path, vnnlib: Path, seconds: float, overrides: dict,
             cascade: bool = False, device: str = "cpu") -> dict:
    """Run the search on region 0 for ``seconds``; returns its stats plus timing. With
    ``cascade`` the bound cascade runs first and hands the root its bounds, as in ``verify``;
    the trace's CPU seconds then count from the cascade's start (root included)."""
    from dataclasses import fields

    import verifier.onnx_import.converters  # noqa: F401
    from verifier.bab.neuron_split import NeuronSplitOptions, NeuronSplitSearch
    from verifier.bab.problem import RegionProblem
    from verifier.bab.progress import Progress
    from verifier.onnx_import.loader import load_model
    from verifier.spec import load_spec

    known = {f.name for f in fields(NeuronSplitOptions)}
    if set(overrides) - known:  # a setting the measured code does not have (the baseline)
        print(f"(not in this tree's NeuronSplitOptions, ignored: {sorted(set(overrides) - known)})",
              file=sys.stderr, flush=True)
        overrides = {k: v for k, v in overrides.items() if k in known}
    model = load_model(onnx)
    spec = load_spec(vnnlib)
    problem = RegionProblem.from_region(0, spec.regions[0], device, torch.float64)
    start = time.monotonic()
    trace: list[tuple[float, int, float]] = []  # (CPU s, domains done, worst margin)

    def record(event: dict) -> None:
        trace.append((time.process_time(), event["domains_done"],
                      -float("inf") if event["global_bound"] is None
                      else event["global_bound"]))

    root_bounds, cascade_cpu = None, 0.0
    if cascade:
        refuted, root_bounds, cascade_cpu = _cascade(model.graph, problem, start + seconds,
                                                     overrides)
        if refuted:
            return {"verdict": "unsat", "stopped": "refuted by the cascade", "root_s": 0.0,
                    "seconds": time.monotonic() - start, "cpu_s": cascade_cpu,
                    "root_cpu_s": 0.0, "trace": [], "domains_bounded": 0}
    # keywords newer than the baseline's search only when set (/work/before has no root_bounds)
    newer = {} if root_bounds is None else {"root_bounds": root_bounds}
    search = NeuronSplitSearch(model.graph, problem, start + seconds,
                               NeuronSplitOptions(**overrides),
                               Progress(record, every_s=0.0, label="bench"),
                               validate=lambda x: None, attack=None, **newer)
    from bounds.engine.deadline import DeadlineExceeded, engine_deadline

    root_s, root_cpu = [0.0], [0.0]
    first_root = search.root
    cpu_start = time.process_time()

    def timed_root():
        t, c = time.monotonic(), time.process_time()
        out = first_root()
        root_s[0], root_cpu[0] = time.monotonic() - t, time.process_time() - c
        return out

    search.root = timed_root
    try:
        with engine_deadline(start + seconds + GRACE_S):
            outcome = search.run()
        verdict, stats = outcome.verdict, dict(outcome.stats)
    except DeadlineExceeded:
        verdict, stats = "timeout", {"domains_bounded": search.counters.done,
                                     "steps": search.counters.steps}
    stats["verdict"], stats["seconds"] = verdict, time.monotonic() - start
    stats["root_s"], stats["cpu_s"] = root_s[0], time.process_time() - cpu_start
    stats["root_cpu_s"] = root_cpu[0]
    after = -cascade_cpu if cascade else root_cpu[0]  # the checkpoints' zero
    stats["trace"] = [(c - cpu_start - after, d, w) for c, d, w in trace]
    stats["cascade_cpu_s"] = cascade_cpu
    return stats


def at_cpu(trace: list, seconds: float) -> str:
    """'domains/worst' when ``seconds`` CPU s after the root had passed ('-': not reached)."""
    got = [(d, w) for c, d, w in trace if c <= seconds]
    if not got or trace[-1][0] < seconds:
        return "-"
    return f"{got[-1][0]}/{got[-1][1]:.4g}"


def at_domains(trace: list, count: int) -> str:
    """The worst margin once ``count`` domains were bounded ('-': never), with the CPU s."""
    got = [(c, w) for c, d, w in trace if d >= count]
    return "-" if not got else f"{got[0][1]:.4g}@{got[0][0]:.1f}s"


def _synthetic(n: int, rows: int = 9, widths=(256, 256, 256, 256)):
    """n domains shaped like mnistfc 256x4's (9 spec rows): splits, bounds, alphas, betas."""
    from verifier.bab.neuron_domains import NeuronDomains

    gen = torch.Generator().manual_seed(0)
    shapes = {f"relu{i}": w for i, w in enumerate(widths)}

    def per_layer(make):
        return {k: make(w) for k, w in shapes.items()}

    return NeuronDomains(
        per_layer(lambda w: torch.zeros(n, w, dtype=torch.int8)),
        per_layer(lambda w: torch.randn(n, w, generator=gen, dtype=torch.float64)),
        per_layer(lambda w: torch.randn(n, w, generator=gen, dtype=torch.float64)),
        per_layer(lambda w: torch.rand(n, rows, w, generator=gen)),
        per_layer(lambda w: torch.rand(n, rows, w, generator=gen)),
        torch.randn(n, rows, generator=gen, dtype=torch.float64),
        torch.randn(n, generator=gen, dtype=torch.float64),
        torch.zeros(n, rows, dtype=torch.bool), torch.zeros(n, 3, dtype=torch.long),
        torch.zeros(n, dtype=torch.long))


def queue_micro(n: int, steps: int = 10, batch: int = 64) -> None:
    """Seconds per step of queue work alone (take the worst ``batch``, put back twice as
    many) with n domains queued: the packed queue sorted and copied whole (the code before
    issue 18, ``NeuronDomains.take_worst``) against the slot queue."""
    from verifier.bab.domain_queue import DomainQueue

    packed, kids = _synthetic(n), _synthetic(2 * batch)
    began = time.monotonic()
    for _ in range(steps):
        order = torch.argsort(packed.margin)
        packed.select(order[:batch])
        packed = packed.select(order[batch:])
        packed.extend(kids)
    sort_s = (time.monotonic() - began) / steps
    slots = DomainQueue()
    slots.push(_synthetic(n))
    began = time.monotonic()
    for _ in range(steps):
        slots.pop_worst(batch)
        slots.push(kids)
    slot_s = (time.monotonic() - began) / steps
    print(f"queue of {n} domains: sort-and-copy {sort_s * 1e3:8.1f} ms/step, "
          f"slot queue {slot_s * 1e3:8.1f} ms/step", flush=True)


def _side_by_side(args, argv: list[str]) -> int:
    """This tree and ``args.baseline`` measured at the same time (two processes, one torch
    thread each): both see the same load, and CPU seconds compare."""
    import subprocess

    rest, skip = [], False
    for a in argv:  # the same arguments without --baseline (and without the labels)
        if skip or a.startswith("--baseline="):
            skip = False
            continue
        if a in ("--baseline", "--label"):
            skip = True
            continue
        rest.append(a)
    tree = Path(args.baseline).resolve()
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    base = subprocess.Popen([sys.executable, __file__, *rest, "--label", tree.name],
                            cwd=tree, env=env, stdout=subprocess.PIPE, text=True)
    ours = main([*rest, "--label", args.label or "main"])
    out, _ = base.communicate()
    print(out, end="", flush=True)
    return ours or base.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--batch", type=int, default=0, help="domains per step (0: default)")
    parser.add_argument("--iterations", type=int, default=0,
                        help="alpha-beta iterations per step (0: default)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a NeuronSplitOptions field, e.g. relu_multi_split=false")
    parser.add_argument("--label", default="", help="tag printed on every line")
    parser.add_argument("--case", action="append", default=[], metavar="BENCH:ONNX:VNNLIB",
                        help="run this instance (paths relative to the benchmark) instead of "
                             "the built-in cases; repeatable")
    parser.add_argument("--checkpoints", default="",
                        help="comma-separated CPU seconds after the root: print the domains "
                             "done and worst margin reached by each (steadier than wall time "
                             "under load)")
    parser.add_argument("--domain-marks", default="",
                        help="comma-separated domain counts: print the worst margin when each "
                             "was first reached (tightness per domain)")
    parser.add_argument("--cascade", action="store_true",
                        help="run the bound cascade first, as verify does, and give the root "
                             "its bounds; checkpoints then count CPU s from the cascade's "
                             "start")
    parser.add_argument("--queue", type=int, default=0,
                        help="only time the queue's own work with this many domains queued")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the search runs (cuda: compare domains per wall second)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default one: CPU seconds then count work)")
    parser.add_argument("--baseline", default="", metavar="TREE",
                        help="also run this script on another checkout (e.g. /work/before) "
                             "at the same time, same arguments: its lines come after ours")
    args = parser.parse_args(argv)
    if args.baseline:
        return _side_by_side(args, sys.argv[1:] if argv is None else argv)
    if args.queue:
        queue_micro(args.queue)
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    only = {b for b in args.only.split(",") if b}
    overrides: dict = {"batch": args.batch} if args.batch else {}
    if args.iterations:
        from dataclasses import fields

        from verifier.bab.beta import BetaOptions
        from verifier.bab.neuron_split import NeuronSplitOptions

        if "step_iterations" in {f.name for f in fields(NeuronSplitOptions)}:
            overrides["step_iterations"] = args.iterations
        else:  # the baseline's setting
            overrides["beta"] = BetaOptions(iterations=args.iterations)
    for flag in args.set:  # NAME=VALUE of a NeuronSplitOptions field (bool/int/float/str)
        name, _, value = flag.partition("=")
        overrides[name] = {"true": True, "false": False}.get(value.lower(), value)
        for kind in (int, float):
            try:
                overrides[name] = kind(value)
                break
            except ValueError:
                pass
    cases = [(Path(c.split(":")[2]).stem.replace("mnist_spec_idx_", "idx")[:14],
              *c.split(":")) for c in args.case] or CASES
    for label, bench, onnx, vnnlib in cases:
        if only and bench not in only:
            continue
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        stats = run_case(BENCH / bench / onnx, BENCH / bench / vnnlib, args.seconds, overrides,
                         args.cascade, args.device)
        if prof:
            prof.disable()
        if stats.get("stopped") == "refuted by the cascade":
            print(f"{args.label:8s} {label:14s} unsat by the cascade in {stats['cpu_s']:.1f} "
                  f"CPU s", flush=True)
            continue
        done = stats.get("domains_bounded", 0)
        rate = (done - 1) / max(1e-9, stats["seconds"] - stats["root_s"])
        cpu_rate = (done - 1) / max(1e-9, stats["cpu_s"] - stats["root_cpu_s"])
        print(f"{args.label:8s} {label:14s} {stats['verdict']:8s} "
              f"domains {done:7d} steps {stats.get('steps', 0):5d} "
              f"queued {stats.get('domains_queued', -1):6d} {stats['seconds']:6.1f}s "
              f"root {stats['root_s']:5.1f}s {rate:8.1f} domains/s after the root "
              f"({cpu_rate:7.1f} per CPU s) "
              f"worst {stats.get('worst_margin') or float('nan'):.4g} "
              f"CPU {stats['cpu_s'] + stats['cascade_cpu_s']:.1f}s"
              + (f" queue {stats['queue_bytes_per_domain'] / 1024:.1f} kB/domain"
                 if "queue_bytes_per_domain" in stats else ""), flush=True)
        if args.checkpoints:  # the worst margin at equal CPU time: fair under load
            marks = [float(x) for x in args.checkpoints.split(",")]
            since = (f"from the cascade's start (cascade {stats['cascade_cpu_s']:.1f} s)"
                     if args.cascade else "after the root")
            print(f"{args.label:8s} {label:14s} domains/worst at CPU s {since}: "
                  + "  ".join(f"{m:g}: {at_cpu(stats['trace'], m)}" for m in marks),
                  flush=True)
        if args.domain_marks:  # bound tightness per domain: the worst margin at equal counts
            marks = [int(x) for x in args.domain_marks.split(",")]
            print(f"{args.label:8s} {label:14s} worst (at CPU s) once N domains were bounded: "
                  + "  ".join(f"{m}: {at_domains(stats['trace'], m)}" for m in marks),
                  flush=True)
        if "nogoods_learned" in stats:  # issue 18 item 3 (``nogoods``)
            print(f"{args.label:8s} {label:14s} nogoods learned {stats['nogoods_learned']} "
                  f"of {stats['nogood_attempts']} tried (mean length "
                  f"{stats['nogood_mean_length']:.1f}), pruned {stats['nogood_pruned']}, "
                  f"forced {stats['nogood_units']}, "
                  f"bounded with cuts {stats.get('nogood_cut_domains', '-')}, "
                  f"learn {stats['nogood_learn_s']:.1f}s "
                  f"match {stats['nogood_match_s']:.1f}s", flush=True)
        if prof:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
