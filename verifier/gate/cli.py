"""``nncert spec robustness`` and ``nncert gate``.

Registered on the main parser by :func:`add_parsers` (``verifier/cli/__init__.py``); also runs
on its own as ``python -m verifier.gate {spec robustness,gate} ...`` (:func:`main`).

Exit status: ``gate`` 0 when the thresholds hold, 1 when they do not; both commands 2 on
usage or input errors (one line on stderr), 3 on an internal error.
"""

from __future__ import annotations

import argparse
import logging
import math
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


def _ball_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M.onnx", help="the ONNX classifier")
    p.add_argument("--data", required=True, metavar="DATA",
                   help=".npz with x [N, ...] and y [N], or a folder with labels.csv")
    p.add_argument("--eps", required=True, type=eps_value, metavar="E", help="L-inf radius")
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
    gate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    gate.add_argument("--seed", type=int, default=0)
    gate.add_argument("--no-model-check", action="store_true",
                      help="skip the differential check of the model against onnxruntime")
    gate.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    gate.set_defaults(run=run_gate_cmd)


def _spec_missing(args) -> int:
    raise UsageError("nncert spec needs a kind: nncert spec robustness ...")


def _load(args):
    """(model, dataset, ball) from the shared options; NncertError on bad input."""
    from verifier.gate.data import load_dataset
    from verifier.gate.gate import output_count
    from verifier.gate.specs import BallOptions
    from verifier.onnx_import.loader import load_model

    ball = BallOptions(args.eps, args.norm, args.clip)
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
        text = f"[{bar}] {done}/{total} {outcome.name}: {outcome.outcome}"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(79) + ("\n" if done == total else ""))
        elif done == total or done % max(1, total // 20) == 0:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def run_gate_cmd(args) -> int:
    from verifier.config import VerifyConfig
    from verifier.gate import reports
    from verifier.gate.gate import Thresholds, format_table, run_gate

    thresholds = Thresholds(args.min_certified, args.max_falsified, args.allow_unknown)
    model, dataset, ball, _ = _load(args)
    config = VerifyConfig(timeout=args.timeout_per_sample, device=args.device, seed=args.seed,
                          check_model=not args.no_model_check)
    summary = run_gate(model, dataset, ball, thresholds, config, str(args.data),
                       progress=None if args.no_progress else _Progress())
    sys.stdout.write(format_table(summary))
    sys.stdout.flush()
    if args.json:
        reports.write_json(summary, args.json)
    if args.junit:
        reports.write_junit(summary, args.junit)
    if args.sarif:
        reports.write_sarif(summary, args.sarif)
    return EXIT_OK if summary.passed else EXIT_INCORRECT


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
