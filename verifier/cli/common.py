"""Exit codes, one-line error reporting and small helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import os
import sys
import time

EXIT_OK = 0
EXIT_INCORRECT = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3

#: Seconds the CLI lets the pipeline run past its timeout before answering on its own.
OVERRUN_GRACE_S = 5.0


class UsageError(Exception):
    """Bad command-line input detected by the CLI itself (exit status 2)."""


def one_line(text: str, limit: int = 4000) -> str:
    """Collapse whitespace so that an error message is exactly one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(message: str, status: int) -> int:
    """Print ``error: MESSAGE`` as one line on stderr and return ``status``."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    return status


def classify_error(exc: BaseException) -> tuple[str, int]:
    """Map an exception to (one-line message, exit status): bad input -> 2, anything else -> 3."""
    from bounds.registry import UnsupportedOpError
    from verifier.errors import NncertError

    if isinstance(exc, NncertError | UnsupportedOpError | UsageError):
        return one_line(str(exc)), EXIT_BAD_INPUT
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else ""
        what = exc.strerror or str(exc)
        return one_line(f"cannot read {name!s}: {what}" if name else what), EXIT_BAD_INPUT
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return one_line(f"invalid option: {errs}"), EXIT_BAD_INPUT
    except ImportError:  # pragma: no cover
        pass
    return one_line(f"internal error: {type(exc).__name__}: {exc}"), EXIT_INTERNAL


def positive_float(text: str) -> float:
    """argparse type: a number of seconds > 0 (integers and decimals accepted)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0: {text!r}")
    return value


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), or None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class Stopwatch:
    """Named wall-clock laps, measured from the process start when it is known."""

    def __init__(self) -> None:
        age = process_age()
        self.origin = time.monotonic() - (age if age is not None else 0.0)
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()
        self.laps["startup"] = self._last - self.origin

    def lap(self, name: str) -> float:
        now = time.monotonic()
        self.laps[name] = now - self._last
        self._last = now
        return self.laps[name]

    def since_start(self) -> float:
        return time.monotonic() - self.origin

    def report(self) -> str:
        parts = " ".join(f"{k}={v:.3f}s" for k, v in self.laps.items())
        return f"{parts} total={self.since_start():.3f}s"


def _bab_fields():
    """(field, choices, ``int`` for a number or None for a switch) per ``BabConfig``
    setting."""
    from dataclasses import fields
    from typing import get_args, get_type_hints

    from verifier.config import BabConfig

    hints = get_type_hints(BabConfig)
    return [(f, int if hints[f.name] is int else get_args(hints[f.name]) or None)
            for f in fields(BabConfig)]


def add_bab_arguments(p: argparse.ArgumentParser) -> None:
    """Branch-and-bound switches (VerifyConfig.bab), for ablations and hard cases: one option
    per ``BabConfig`` field, from its flag, default, choices and help text."""
    g = p.add_argument_group("branch-and-bound")
    for f, choices in _bab_fields():
        dest, meta = f"bab_{f.name}", f.metadata
        if choices is None:
            action = "store_false" if f.default else "store_true"
            g.add_argument(meta["flag"], dest=dest, action=action, help=meta["help"])
        elif choices is int:
            g.add_argument(meta["flag"], dest=dest, type=int, default=f.default,
                           metavar="N", help=f"{meta['help']} (default {f.default})")
        else:
            g.add_argument(meta["flag"], dest=dest, choices=list(choices), default=f.default,
                           help=meta["help"])


def bab_settings(args: argparse.Namespace) -> dict:
    """The --bab-* flags as VerifyConfig.bab fields (plain values: they cross processes)."""
    return {f.name: getattr(args, f"bab_{f.name}") for f, _ in _bab_fields()}
