"""``nncert verify``: one instance, VNN-COMP style or VNN-LIB 2.0 style.

* ``nncert verify MODEL.onnx SPEC.vnnlib [--results-file F]``: stdout's first line is the
  verdict (sat/unsat/unknown/timeout/error); after ``sat`` the counterexample in VNN-COMP form.
* ``nncert verify QUERY.vnnlib --network NAME=MODEL.onnx [--network ...]``: the VNN-LIB 2.0
  solver interface; the first line is sat/unsat/unknown/timed-out, then the assignment
  (``NAME TYPE [dims]`` followed by one value per line, every declared tensor of every
  network in declaration order). One ``--network`` per declared network, except those
  declared ``equal-to`` another (they run the other's model).

Queries beyond one network with one input and one output tensor (hidden tensors, several
tensors or networks, constraints over several inputs, products) are verified on a composed
model (``verifier.compose``, docs/vnnlib.md); the rest take the plain pipeline unchanged.

The timeout counts from process start. A watchdog answers ``timeout`` on its own and exits if
the pipeline runs more than OVERRUN_GRACE_S past it, so a harness never waits on a hung run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
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
             stdout: bool = True, assignment=None) -> bool:
        with self._lock:
            if self.done:
                return False
            self.done = True
            if assignment is not None:  # a composed query's checked assignment
                return self._emit_assignment(verdict, assignment, stdout)
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

    def _emit_assignment(self, verdict: str, assignment, stdout: bool) -> bool:
        from types import SimpleNamespace

        from verifier.compose.report import assignment_text, flat_inputs_outputs

        x, y = flat_inputs_outputs(assignment)
        vnncomp = vnncomp_result_text(verdict, SimpleNamespace(x=x, y=y))
        if self.results_file:
            write_text_atomic(self.results_file, vnncomp)
        if stdout:
            sys.stdout.write(verdict + "\n" + assignment_text(assignment) + "\n"
                             if self.v2 else vnncomp)
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


def _inputs(args) -> tuple[dict[str, str], str, bool]:
    """(model paths by network name, spec path, VNN-LIB 2.0 interface?) from the two accepted
    forms; the positional form names its one model ``""``."""
    if args.network:
        if len(args.paths) != 1:
            raise UsageError("with --network, give exactly one QUERY.vnnlib file")
        paths: dict[str, str] = {}
        for option in args.network:
            name, sep, model = option.partition("=")
            if not sep or not name or not model:
                raise UsageError(f"--network expects NAME=MODEL.onnx, got {option!r}")
            if name in paths:
                raise UsageError(f"--network {name} is given twice")
            paths[name] = model
        return paths, args.paths[0], True
    if len(args.paths) != 2:
        raise UsageError("expected MODEL.onnx SPEC.vnnlib (or QUERY.vnnlib --network "
                         "NAME=MODEL.onnx)")
    return {"": args.paths[0]}, args.paths[1], False


def _check_files(*paths: str) -> None:
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"file not found: {path}")
        if not p.is_file():
            raise UsageError(f"not a regular file: {path}")
        if not os.access(p, os.R_OK):
            raise UsageError(f"file is not readable: {path}")


def bind_networks(info, paths: dict[str, str]) -> dict[str, str]:
    """Model path of every declared network: its ``--network``, or for a network declared
    ``equal-to`` another, the other's. UsageError for a missing, unknown or unneeded one."""
    declared = [n.name for n in info.networks]
    names = ", ".join(declared) or "none"
    unknown = [n for n in paths if n not in declared]
    if unknown:
        raise UsageError(f"--network {unknown[0]!r} is not declared in the query "
                         f"(declared: {names})")
    equal = {n.name: other for n in info.networks
             for rel, other in n.equivalences if rel == "equal-to"}
    out = {}
    for net in declared:
        source, seen = net, set()
        while source in equal and source not in paths:
            if source in seen or equal[source] not in declared:
                raise UsageError(f"network {net} is equal-to {equal[source]!r}, which is not "
                                 f"a declared network with a model")
            seen.add(source)
            source = equal[source]
        if source not in paths:
            raise UsageError(f"network {net} has no model: give --network {net}=MODEL.onnx")
        if net in equal and net in paths:
            raise UsageError(f"network {net} is declared equal-to {equal[net]}; give no "
                             f"--network for it")
        out[net] = paths[source]
    return out


def run(args) -> int:
    """Run ``verify``; bad input raises (main prints one line, exit 2)."""
    clock = Stopwatch()
    paths, spec_path, v2 = _inputs(args)
    emitter = Emitter(v2=v2, results_file=args.results_file)
    try:
        return _verify(args, clock, emitter, paths, spec_path)
    except Exception as exc:
        _, status = classify_error(exc)
        # Harnesses read the results file (and, on internal failures, stdout): say "error".
        emitter.emit("error", stdout=status != EXIT_BAD_INPUT)
        raise


def _verify(args, clock: Stopwatch, emitter: Emitter, paths: dict[str, str],
            spec_path: str) -> int:
    _check_files(*paths.values(), spec_path)
    timer = _watchdog(emitter, args.timeout + OVERRUN_GRACE_S - clock.since_start())
    try:
        from verifier.spec import load_query

        # Spec first: it decides whether the model is verified as is or composed.
        query = load_query(spec_path, compose=True)
        clock.lap("parse_spec")
        # a model too large for the machine, or another process taking its memory, gives an
        # ``unknown`` answer, not a kill (verifier.memory_guard)
        from verifier.memory_guard import guard_process_memory

        guard_process_memory()
        if emitter.v2:
            paths = bind_networks(query.info, paths)
        elif query.needs_composition:  # MODEL QUERY: the one model stands for every network
            from verifier.compose.bind import one_model_per_network

            paths = one_model_per_network(query.info, paths[""])
        if query.needs_composition:
            return _verify_composed(args, clock, emitter, paths, query)
        (model_path,) = paths.values()
        from verifier.pipeline import check_spec_matches, load_runnable_model

        # refused by the importer: attacked only
        model = load_runnable_model(model_path, query.spec.n_inputs)
        clock.lap("load_model")
        check_spec_matches(model, query.spec)
        config = _config(args, clock)
        if config is None:
            emitter.emit("timeout")
            return EXIT_OK
        if config.check_model and args.profile_startup and hasattr(model, "graph"):
            if _timed_check(model, query.spec, args.seed, clock, args.timeout):
                config = config.model_copy(update={"check_model": False})
            config = config.model_copy(
                update={"timeout": max(args.timeout - clock.since_start(), 0.01)})
        from verifier.pipeline import verify

        ready = clock.since_start()
        result = verify(model, query.spec, config)
        clock.lap("verify")
    finally:
        timer.cancel()
    _report_profile(args, clock, ready, result)
    if result.message:
        log.info("%s (%s): %s", result.verdict, result.method, result.message)
    emitter.emit(result.verdict, result.counterexample, info=query.info, model=model)
    return EXIT_OK


def _config(args, clock: Stopwatch):
    """The run's VerifyConfig with the time left, or None when none is left."""
    import torch  # noqa: F401  (the pipeline needs it; imported here so the lap shows it)

    clock.lap("import_torch")
    from verifier.config import BabConfig, VerifyConfig

    clock.lap("import_nncert")
    remaining = args.timeout - clock.since_start()
    if remaining <= 0.01:
        return None
    check = not args.no_model_check
    if not check:
        sys.stderr.write("warning: the import check against onnxruntime was skipped "
                         "(--no-check)\n")
    return VerifyConfig(timeout=max(remaining, 0.01), method=args.method, device=args.device,
                        seed=args.seed, check_model=check, strict_box=args.strict_box,
                        bab=BabConfig(**bab_settings(args)))


def _verify_composed(args, clock: Stopwatch, emitter: Emitter, paths: dict[str, str],
                     query) -> int:
    """A query verified on the composed model of its networks (verifier.compose)."""
    from verifier.compose.run import verify_query
    from verifier.onnx_import.loader import read_model_proto

    protos = {name: read_model_proto(path)[0] for name, path in paths.items()}
    clock.lap("load_model")
    config = _config(args, clock)
    if config is None:
        emitter.emit("timeout")
        return EXIT_OK
    ready = clock.since_start()
    label = "+".join(str(p) for p in dict.fromkeys(paths.values()))
    found = verify_query(query, protos, config, label)
    clock.lap("verify")
    result = found.result
    _report_profile(args, clock, ready, result)
    if result.message:
        log.info("%s (%s): %s", result.verdict, result.method, result.message)
    emitter.emit(result.verdict, assignment=found.assignment)
    return EXIT_OK


def _timed_check(model, spec, seed: int, clock: Stopwatch, timeout: float) -> bool:
    """Profiling only: run the pipeline's model check as its own lap, within the share of
    the time left that the pipeline gives it (without a deadline it checked every point: 64 s
    of a 60 s run on VGG16). True if it ran."""
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
        differential_check(model, spec, seed=seed,
                           deadline=time.monotonic() + timeout - clock.since_start())
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
