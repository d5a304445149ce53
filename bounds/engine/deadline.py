"""A wall-clock deadline the bound engines check between their steps.

A single CROWN or alpha-CROWN call on a large network can run for many seconds; searches only
look at the clock between calls. Callers that must answer in time set a deadline for the
engines (a context variable, so threads and nested calls keep their own), and the engines
raise :class:`DeadlineExceeded` at their next check past it: between graph nodes, chunks of
intermediate bounds and alpha iterations. A half-finished bound is never returned.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "bound_engine_deadline", default=None)


class DeadlineExceeded(Exception):  # noqa: N818 - reads as the event it reports
    """The engines' deadline passed during a bound computation."""


@contextmanager
def engine_deadline(deadline: float | None) -> Iterator[None]:
    """Within the block, bound computations stop (raise) once ``time.monotonic()`` passes
    ``deadline`` (None: no deadline)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """Raise DeadlineExceeded if the current deadline has passed."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"bound computation stopped at its deadline ({deadline:.1f})")
