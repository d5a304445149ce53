"""``nncert verify``: one instance, VNN-COMP style or VNN-LIB 2.0 style.

* ``nncert verify MODEL.onnx SPEC.vnnlib [--results-file F]``: stdout's first line is the
  verdict (sat/unsat/unknown/timeout/error); after ``sat`` the counterexample in VNN-COMP form.
* ``nncert verify QUERY.vnnlib --network NAME=MODEL.onnx``: the VNN-LIB 2.0 solver interface;
  the first line is sat/unsat/unknown/timed-out, then the assignment (``NAME TYPE [dims]``
  followed by one value per line, inputs then outputs).

The timeout counts from process start. A watchdog answers ``timeout`` on its own and exits if
the pipeline runs more than OVERRUN_GRACE_S past it, so a harness never waits on a hung run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from verifier.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    OVERRUN_GRACE_S,
    Stopwatch,
    UsageError,
    add_bab_arguments,
    bab_settings,
    classify_error,
    positive_float,
)
from verifier.cli.output import (
    declared_variables,
    vnncomp_result_text,
    vnnlib2_result_text,
    write_text_atomic,
)
from verifier.config import DEVICES, METHODS

log = logging.getLogger("nncert.verify")
DEFAULT_TIMEOUT_S = 300.0


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "verify", parents=[common], help="verify one property on one model",
        description="nncert verify MODEL.onnx SPEC.vnnlib | nncert verify QUERY.vnnlib "
                    "--network NAME=MODEL.onnx",
    )
    p.add_argument("paths", nargs="+", metavar="FILE",
                   help="MODEL.onnx SPEC.vnnlib, or QUERY.vnnlib with --network")
    p.add_argument("--network", action="append", default=[], metavar="NAME=MODEL.onnx",
                   help="VNN-LIB 2.0: bind the query's network NAME to an ONNX file")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds, counted from process start (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--results-file", metavar="F", help="write a VNN-COMP results file")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--method", choices=METHODS,
                   default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-check", "--no-model-check", dest="no_model_check",
                   action="store_true",
                   help="skip the differential check of the imported model against onnxruntime")
    p.add_argument("--strict-box", action="store_true",
                   help="accept only counterexamples inside the real input box (VNN-COMP 2026 "
                        "mode); by default a box with no float32 value takes the nearest "
                        "float32 within 1e-4")
    add_bab_arguments(p)
    p.add_argument("--profile-startup", action="store_true",
                   help="print stage timings (import, load model, parse spec, ...) on stderr")
    p.set_defaults(run=run)


class Emitter:
    """Writes the answer exactly once (results file first, then stdout), from any thread."""

    def __init__(self, v2: bool, results_file: str | None):
        self.v2, self.results_file = v2, results_file
        self._lock = threading.Lock()
        self.done = False

    def emit(self, verdict: str, counterexample=None, info=None, model=None,
             stdout: bool = True) -> bool:
        with self._lock:
            if self.done:
                return False
            self.done = True
            if self.results_file:
                write_text_atomic(self.results_file, vnncomp_result_text(verdict, counterexample))
            if stdout:
                if self.v2:
                    text = vnnlib2_result_text(verdict, counterexample, info, model)
                else:
                    text = vnncomp_result_text(verdict, counterexample)
                sys.stdout.write(text)
                sys.stdout.flush()
            return True


def _watchdog(emitter: Emitter, seconds: float) -> threading.Timer:
    def fire() -> None:
        if emitter.emit("timeout"):
            log.warning("verification overran its timeout; answering timeout and exiting")
            sys.stderr.flush()
            os._exit(EXIT_OK)

    timer = threading.Timer(max(0.0, seconds), fire)
    timer.daemon = True
    timer.start()
    return timer


def _inputs(args) -> tuple[str, str, str | None]:
    """(model path, spec path, network name or None) from the two accepted forms."""
    if args.network:
        if len(args.paths) != 1:
            raise UsageError("with --network, give exactly one QUERY.vnnlib file")
        if len(args.network) > 1:
            raise UsageError("queries with several networks are not supported "
                             f"({len(args.network)} --network options given)")
        name, sep, model = args.network[0].partition("=")
        if not sep or not name or not model:
            raise UsageError(f"--network expects NAME=MODEL.onnx, got {args.network[0]!r}")
        return model, args.paths[0], name
    if len(args.paths) != 2:
        raise UsageError("expected MODEL.onnx SPEC.vnnlib (or QUERY.vnnlib --network "
                         "NAME=MODEL.onnx)")
    return args.paths[0], args.paths[1], None


def _check_files(*paths: str) -> None:
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"file not found: {path}")
        if not p.is_file():
            raise UsageError(f"not a regular file: {path}")
        if not os.access(p, os.R_OK):
            raise UsageError(f"file is not readable: {path}")


def load_query(path: str):
    """(Spec, declarations or None): uses ``verifier.spec.load_query`` when the parser has it."""
    import verifier.spec as spec_module

    if hasattr(spec_module, "load_query"):
        query = spec_module.load_query(path)
        return query.spec, query.info
    spec = spec_module.load_spec(path)
    return spec, getattr(spec, "info", None)


def _check_network_name(info, name: str) -> None:
    networks = getattr(info, "networks", None)
    if not networks:
        return
    declared = [str(n if isinstance(n, str) else getattr(n, "name", n)) for n in networks]
    if len(declared) > 1:
        raise UsageError(f"queries with several networks are not supported "
                         f"(declared: {', '.join(declared)})")
    if name not in declared:
        raise UsageError(f"--network {name!r} is not declared in the query "
                         f"(declared: {', '.join(declared)})")


def run(args) -> int:
    """Run ``verify``; bad input raises (main prints one line, exit 2)."""
    clock = Stopwatch()
    model_path, spec_path, network = _inputs(args)
    emitter = Emitter(v2=network is not None, results_file=args.results_file)
    try:
        return _verify(args, clock, emitter, model_path, spec_path, network)
    except Exception as exc:
        _, status = classify_error(exc)
        # Harnesses read the results file (and, on internal failures, stdout): say "error".
        emitter.emit("error", stdout=status != EXIT_BAD_INPUT)
        raise


def _verify(args, clock: Stopwatch, emitter: Emitter, model_path: str, spec_path: str,
            network: str | None) -> int:
    _check_files(model_path, spec_path)
    timer = _watchdog(emitter, args.timeout + OVERRUN_GRACE_S - clock.since_start())
    try:
        # Model and spec first: bad input is reported before paying for the torch import.
        from verifier.pipeline import load_runnable_model

        model = load_runnable_model(model_path)  # refused by the importer: attacked only
        clock.lap("load_model")
        spec, info = load_query(spec_path)
        clock.lap("parse_spec")
        if network is not None:
            _check_network_name(info, network)
        from verifier.pipeline import check_spec_matches

        check_spec_matches(model, spec)
        import torch  # noqa: F401  (the pipeline needs it; imported here so the lap shows it)

        clock.lap("import_torch")
        from verifier.config import BabConfig, VerifyConfig
        from verifier.pipeline import verify

        clock.lap("import_nncert")
        remaining = args.timeout - clock.since_start()
        if remaining <= 0.01:
            emitter.emit("timeout")
            return EXIT_OK
        check = not args.no_model_check
        if not check:
            sys.stderr.write("warning: the import check against onnxruntime was skipped "
                             "(--no-check)\n")
        if check and args.profile_startup and hasattr(model, "graph"):
            check = not _timed_check(model, spec, args.seed, clock)
            remaining = args.timeout - clock.since_start()
        config = VerifyConfig(timeout=max(remaining, 0.01), method=args.method,
                              device=args.device, seed=args.seed, check_model=check,
                              strict_box=args.strict_box,
                              bab=BabConfig(**bab_settings(args)))
        ready = clock.since_start()
        result = verify(model, spec, config)
        clock.lap("verify")
    finally:
        timer.cancel()
    _report_profile(args, clock, ready, result)
    if result.message:
        log.info("%s (%s): %s", result.verdict, result.method, result.message)
    if network is not None and declared_variables(info) is None:
        log.debug("query exposes no network declarations; assignment uses X/Y names")
    emitter.emit(result.verdict, result.counterexample, info=info, model=model)
    return EXIT_OK


def _timed_check(model, spec, seed: int, clock: Stopwatch) -> bool:
    """Profiling only: run the pipeline's model check as its own lap. True if it ran."""
    try:
        from verifier.onnx_import.check import differential_check
        from verifier.pipeline import check_spec_matches
    except ImportError:
        return False
    from verifier.errors import ModelMismatchError
    from verifier.onnx_import.loader import ImportedModel

    if not isinstance(model, ImportedModel):  # onnxruntime-only model: nothing to compare
        return False
    check_spec_matches(model, spec)
    try:
        differential_check(model, spec, seed=seed)
    except ModelMismatchError:
        return False  # the pipeline runs the check again and falls back to attacks
    clock.lap("check")
    return True


def _report_profile(args, clock: Stopwatch, ready: float, result) -> None:
    stats = {k: v for k, v in (result.stats or {}).items() if isinstance(v, int | float | str)}
    line = f"profile: {clock.report()} ready={ready:.3f}s"
    if stats:
        line += " " + " ".join(f"{k}={v}" for k, v in sorted(stats.items()))
    log.debug(line)
    if args.profile_startup:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
