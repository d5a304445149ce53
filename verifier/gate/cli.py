"""``nncert spec robustness``, ``nncert gate`` and ``nncert radius``.

Registered on the main parser by :func:`add_parsers` (``verifier/cli/__init__.py``); also runs
on its own as ``python -m verifier.gate {spec robustness,gate,radius} ...`` (:func:`main`).

Exit status: ``gate`` 0 when the thresholds hold, 1 when they do not; every command 2 on
usage or input errors (one line on stderr; an unreachable or refusing ``--server`` too), 3 on
an internal error.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence

from verifier.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INCORRECT,
    EXIT_INTERNAL,
    EXIT_OK,
    UsageError,
    classify_error,
    fail,
    positive_float,
)
from verifier.config import DEVICES

log = logging.getLogger("nncert.gate")


def eps_value(text: str) -> float:
    """argparse type: a finite radius >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def clip_value(text: str) -> tuple[float, float]:
    """argparse type: ``LO,HI`` with finite LO <= HI."""
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise argparse.ArgumentTypeError(f"expected finite LO <= HI, got {text!r}")
    return lo, hi


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]: {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _ball_args(p: argparse.ArgumentParser, eps: bool = True) -> None:
    p.add_argument("--model", required=True, metavar="M.onnx", help="the ONNX classifier")
    p.add_argument("--data", required=True, metavar="DATA",
                   help=".npz with x [N, ...] and y [N], or a folder with labels.csv")
    if eps:
        p.add_argument("--eps", required=True, type=eps_value, metavar="E",
                       help="L-inf radius")
    p.add_argument("--norm", choices=["inf"], default="inf", help="perturbation norm (inf)")
    p.add_argument("--clip", type=clip_value, metavar="LO,HI",
                   help="intersect the ball with [LO, HI] (the valid input range)")
    p.add_argument("--limit", type=count, metavar="N", help="use only the first N samples")


def add_parsers(sub, common) -> None:
    """Register ``spec`` (with ``robustness``) and ``gate`` on the main subparsers."""
    spec = sub.add_parser("spec", parents=[common], help="write VNN-LIB properties",
                          description="nncert spec robustness ...")
    spec.set_defaults(run=_spec_missing)
    kinds = spec.add_subparsers(dest="spec_kind", metavar="KIND")
    rob = kinds.add_parser("robustness", parents=[common],
                           help="local-robustness specs, one per sample (or per target)")
    _ball_args(rob)
    rob.add_argument("--targeted", action="store_true",
                     help="one spec per (sample, other class) instead of one per sample")
    rob.add_argument("--out", required=True, metavar="DIR", help="output folder")
    rob.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                     help="timeout column of the instances.csv written next to the specs")
    rob.set_defaults(run=run_spec)

    gate = sub.add_parser("gate", parents=[common], help="CI gate on certified robustness",
                          description="Verify local robustness of every sample; exit 0 when "
                                      "the thresholds hold, 1 when not, 2 on bad input.")
    _ball_args(gate)
    gate.add_argument("--min-certified", type=fraction, default=1.0, metavar="F",
                      help="least certified accuracy (certified / all samples; default 1)")
    gate.add_argument("--max-falsified", type=count, metavar="N",
                      help="most falsified samples (plus undecided ones, see --allow-unknown)")
    gate.add_argument("--allow-unknown", action="store_true",
                      help="unknown/timeout/error samples do not fail the gate by themselves")
    gate.add_argument("--timeout-per-sample", type=positive_float, default=60.0, metavar="S")
    gate.add_argument("--json", metavar="F", help="write the JSON summary")
    gate.add_argument("--junit", metavar="F", help="write JUnit XML (one test case per sample)")
    gate.add_argument("--sarif", metavar="F", help="write SARIF 2.1.0")
    gate.add_argument("--device", choices=DEVICES, default="auto")
    gate.add_argument("--seed", type=int, default=0)
    gate.add_argument("--no-model-check", action="store_true",
                      help="skip the differential check of the model against onnxruntime")
    gate.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    gate.add_argument("--report", metavar="DIR",
                      help="write index.html and outcomes.png (needs matplotlib)")
    gate.add_argument("--server", metavar="URL",
                      help="run the verifications on an nncert service (nncert serve)")
    gate.add_argument("--api-key", metavar="K",
                      help="API key for --server (default $NNCERT_API_KEY)")
    _equivalence_args(gate)
    gate.set_defaults(run=run_gate_cmd)
    _add_radius_parser(sub, common)


def _equivalence_args(gate: argparse.ArgumentParser) -> None:
    eq = gate.add_argument_group(
        "equivalence gate", "with --reference OLD.onnx, prove per sample that --model stays "
        "close to the reference on the eps-ball (labels in --data are not used)")
    eq.add_argument("--reference", metavar="OLD.onnx",
                    help="the reference model; needs --max-diff D or --same-label")
    what = eq.add_mutually_exclusive_group()
    what.add_argument("--max-diff", type=positive_float, metavar="D",
                      help="prove |model(x) - reference(x)|_inf < D on each ball")
    what.add_argument("--same-label", action="store_true",
                      help="prove argmax model(x) = argmax reference(x) on each ball")


def _equivalence_property(args):
    """The EquivalenceProperty asked for, or None for the robustness gate; UsageError when
    the options do not fit together."""
    from verifier.gate.equivalence import EquivalenceProperty

    if args.reference is None:
        if args.max_diff is not None or args.same_label:
            raise UsageError("--max-diff and --same-label need --reference OLD.onnx")
        return None
    if args.max_diff is None and not args.same_label:
        raise UsageError("--reference needs --max-diff D or --same-label")
    mode = "same-label" if args.same_label else "max-diff"
    return EquivalenceProperty(args.reference, mode, args.max_diff)


def _add_radius_parser(sub, common) -> None:
    rad = sub.add_parser("radius", parents=[common], help="certified radius per sample",
                         description="Per sample, the largest L-inf radius proved robust and "
                                     "the smallest with a validated counterexample (bisection); "
                                     "CSV: sample,label,certified_eps,falsified_eps,status,"
                                     "time_s.")
    _ball_args(rad, eps=False)
    rad.add_argument("--max-eps", type=positive_float, default=0.1, metavar="E",
                     help="largest radius searched (default 0.1)")
    rad.add_argument("--tol", type=positive_float, default=1e-3, metavar="T",
                     help="stop when falsified - certified <= T (default 0.001)")
    rad.add_argument("--timeout-per-sample", type=positive_float, default=60.0, metavar="S",
                     help="time for all verifications of one sample (default 60)")
    rad.add_argument("--timeout-per-call", type=positive_float, metavar="S",
                     help="time for one verification (default a quarter of the sample's)")
    rad.add_argument("--out", metavar="F", help="write the CSV (default: stdout table only)")
    rad.add_argument("--json", metavar="F",
                     help="write JSON: brackets, verification calls, counterexamples")
    rad.add_argument("--report", metavar="DIR",
                     help="write index.html and the certified-accuracy plots (matplotlib)")
    rad.add_argument("--device", choices=DEVICES, default="auto")
    rad.add_argument("--seed", type=int, default=0)
    rad.add_argument("--no-model-check", action="store_true",
                     help="skip the differential check of the model against onnxruntime")
    rad.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    rad.set_defaults(run=run_radius_cmd)


def _spec_missing(args) -> int:
    raise UsageError("nncert spec needs a kind: nncert spec robustness ...")


def _load(args):
    """(model, dataset, ball) from the shared options; NncertError on bad input."""
    from verifier.gate.data import load_dataset
    from verifier.gate.gate import output_count
    from verifier.gate.specs import BallOptions
    from verifier.onnx_import.loader import load_model

    ball = BallOptions(getattr(args, "eps", 0.0), args.norm, args.clip)
    model = load_model(args.model)
    n_out = output_count(model)
    dataset = load_dataset(args.data, model.onnx_input_shapes[0], n_out)
    if args.limit is not None:
        from verifier.gate.data import Dataset

        k = args.limit
        dataset = Dataset(dataset.x[:k], dataset.y[:k], dataset.names[:k])
    return model, dataset, ball, n_out


def run_spec(args) -> int:
    from verifier.gate.specs import write_robustness_specs

    model, dataset, ball, n_out = _load(args)
    paths = write_robustness_specs(args.model, dataset, n_out, ball, args.out,
                                   targeted=args.targeted, timeout_s=args.timeout)
    print(f"wrote {len(paths)} specs and instances.csv to {args.out}")
    return EXIT_OK


class _Progress:
    """A progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, outcome) -> None:
        width = 30
        bar = "#" * (width * done // total) + "." * (width - width * done // total)
        what = getattr(outcome, "outcome", None) or getattr(outcome, "status", "")
        text = f"[{bar}] {done}/{total} {outcome.name}: {what}"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(79) + ("\n" if done == total else ""))
        elif done == total or done % max(1, total // 20) == 0:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _guard_memory() -> None:
    """The gate verifies in this process: like ``verify``, a model too large or another
    process taking the machine's memory gives ``unknown`` answers, not a kill."""
    from verifier.memory_guard import guard_process_memory

    guard_process_memory()


def run_gate_cmd(args) -> int:
    from verifier.gate.gate import Thresholds

    if args.api_key and not args.server:
        raise UsageError("--api-key needs --server URL")
    if args.report:
        from verifier.gate.plots import require_matplotlib

        require_matplotlib()
    thresholds = Thresholds(args.min_certified, args.max_falsified, args.allow_unknown)
    progress = None if args.no_progress else _Progress()
    _guard_memory()
    prop = _equivalence_property(args)
    if prop is not None:
        summary = _run_equivalence(args, prop, thresholds, progress)
    else:
        summary = _run_robustness(args, thresholds, progress)
    _write_reports(args, summary)
    return EXIT_OK if summary.passed else EXIT_INCORRECT


def _run_robustness(args, thresholds, progress):
    from verifier.config import VerifyConfig
    from verifier.gate.gate import run_gate

    model, dataset, ball, _ = _load(args)
    if args.server:
        from verifier.gate.remote import RemoteOptions, run_gate_remote

        key = args.api_key or os.environ.get("NNCERT_API_KEY") or None
        opts = RemoteOptions(args.server, key, args.timeout_per_sample, args.device)
        summary = run_gate_remote(model, dataset, ball, thresholds, opts, str(args.data),
                                  progress)
    else:
        config = VerifyConfig(timeout=args.timeout_per_sample, device=args.device,
                              seed=args.seed, check_model=not args.no_model_check)
        summary = run_gate(model, dataset, ball, thresholds, config, str(args.data), progress)
    return summary


def _run_equivalence(args, prop, thresholds, progress):
    from verifier.config import VerifyConfig
    from verifier.gate.equiv_run import (
        EquivalenceProblem,
        equivalence_dataset,
        run_equivalence_gate,
    )
    from verifier.gate.specs import BallOptions

    problem = EquivalenceProblem.load(args.reference, args.model, prop)
    dataset = equivalence_dataset(problem, args.data, args.limit)
    ball = BallOptions(args.eps, args.norm, args.clip)
    if args.server:
        from verifier.gate.remote import RemoteOptions, run_equivalence_remote

        key = args.api_key or os.environ.get("NNCERT_API_KEY") or None
        opts = RemoteOptions(args.server, key, args.timeout_per_sample, args.device)
        return run_equivalence_remote(problem, dataset, ball, thresholds, opts,
                                      str(args.data), progress)
    config = VerifyConfig(timeout=args.timeout_per_sample, device=args.device, seed=args.seed,
                          check_model=not args.no_model_check)
    return run_equivalence_gate(problem, dataset, ball, thresholds, config, str(args.data),
                                progress)


def _write_reports(args, summary) -> None:
    from verifier.gate import reports
    from verifier.gate.gate import format_table

    sys.stdout.write(format_table(summary))
    sys.stdout.flush()
    if args.json:
        reports.write_json(summary, args.json)
    if args.junit:
        reports.write_junit(summary, args.junit)
    if args.sarif:
        reports.write_sarif(summary, args.sarif)
    if args.report:
        from verifier.gate.plots import write_gate_report

        write_gate_report(summary, args.report)


def run_radius_cmd(args) -> int:
    from verifier.config import VerifyConfig
    from verifier.gate.radius import RadiusOptions, format_radius_table, run_radius, write_csv

    if args.report:
        from verifier.gate.plots import require_matplotlib

        require_matplotlib()
    opts = RadiusOptions(args.max_eps, args.tol, args.timeout_per_sample, args.timeout_per_call,
                         args.clip, args.norm)
    _guard_memory()
    model, dataset, _, _ = _load(args)
    config = VerifyConfig(timeout=args.timeout_per_sample, device=args.device, seed=args.seed,
                          check_model=not args.no_model_check)
    results = run_radius(model, dataset, opts, config,
                         progress=None if args.no_progress else _Progress())
    sys.stdout.write(format_radius_table(results, opts))
    sys.stdout.flush()
    if args.out:
        write_csv(results, args.out)
    if args.json:
        from verifier.gate.radius import write_json

        write_json(results, opts, args.json)
    if args.report:
        from verifier.gate.plots import write_radius_report

        write_radius_report(results, opts.max_eps, args.report)
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m verifier.gate``), with the main CLI's exit statuses."""
    from verifier.cli import setup_logging

    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0)
    parser = _Parser(prog="nncert", parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parsers(sub, common)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.run(args)
    except UsageError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        message, status = classify_error(exc)
        if status == EXIT_INTERNAL:
            log.debug("internal error", exc_info=True)
        return fail(message, status)
