"""The ``nncert`` command line: verify, supports, bench.

stdout carries results only; logs go to stderr (``-v`` for info, ``-vv`` for debug).
Nothing heavy (torch, onnx, the engines) is imported here, so ``nncert --help`` and
``nncert supports ...`` stay fast; each command imports what it needs when it runs.

Exit status (see README): 0 for any verdict; 1 when ``bench`` finds an answer that contradicts
expected.csv; 2 for bad input (one line on stderr naming the problem); 3 for an internal error
(one line ``error: internal error: ...`` on stderr; ``verify`` still prints ``error`` on stdout).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from verifier.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, UsageError, fail

NAME = "nncert"
FULL_NAME = "nncert neural-network verifier"
log = logging.getLogger("nncert")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nncert")
    except Exception:  # not installed (run from a source tree)
        return "0.1.0"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands register their own options)."""
    from verifier.cli import bench_cmd, supports_cmd, tables_cmd, verify_cmd

    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr: -v info, -vv debug")
    parser = _Parser(
        prog=NAME, parents=[common],
        description="Neural-network verifier: ONNX model + VNN-LIB property -> "
                    "sat/unsat/unknown/timeout/error.",
    )
    parser.add_argument("--name", action="store_true", help="print the solver's full name")
    parser.add_argument("--version", action="store_true", help="print the solver's version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    verify_cmd.add_parser(sub, common)
    supports_cmd.add_parser(sub, common)
    bench_cmd.add_parser(sub, common)
    tables_cmd.add_parser(sub, common)
    from verifier.gate.cli import add_parsers as add_gate_parsers

    add_gate_parsers(sub, common)
    # The service sits above the verifier; this lazy, CLI-only import is the one exception to
    # the server -> verifier direction (fastapi/uvicorn load only when `serve` runs).
    from server.cli import add_serve_command

    add_serve_command(sub, common)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nncert`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.name:
        print(FULL_NAME)
        return 0
    if args.version:
        print(_version())
        return 0
    if not args.command:
        print(f"{NAME}: error: a command is required (verify, supports, bench, spec, gate, tables,"
              " radius, serve); see --help", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        status = args.run(args)
    except UsageError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        from verifier.cli.common import classify_error

        message, status = classify_error(exc)
        if status == EXIT_INTERNAL:
            log.debug("internal error", exc_info=True)
        return fail(message, status)
    if argv is None and args.command == "verify":
        _fast_exit(status)
    return status


def _fast_exit(status: int) -> None:
    """Skip interpreter teardown (about 0.7 s with torch loaded): the answer is written."""
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def entry() -> None:
    """``python -m verifier.cli`` / console-script wrapper that exits with main's status."""
    sys.exit(main())
