"""A wall-clock deadline the bound engines check between their steps.

A single CROWN or alpha-CROWN call on a large network can run for many seconds; searches only
look at the clock between calls. Callers that must answer in time set a deadline for the
engines (a context variable, so threads and nested calls keep their own), and the engines
raise :class:`DeadlineExceeded` at their next check past it: between graph nodes, chunks of
intermediate bounds and alpha iterations. A half-finished bound is never returned.
Optional refinements (CROWN bounds of intermediate values) read :func:`time_left` and are
skipped, or stopped after a chunk, when what they still need would not fit: the interval
bounds they would have tightened stay sound.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "bound_engine_deadline", default=None)


# Measured costs (seconds per unit of work, by kind of work) that the engines share between
# the bound computations of one deadline block: a later pass estimates from an earlier one.
_RATES: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "bound_engine_rates", default=None)


class DeadlineExceeded(Exception):  # noqa: N818 - reads as the event it reports
    """The engines' deadline passed during a bound computation."""


@contextmanager
def engine_deadline(deadline: float | None, fresh_rates: bool = False) -> Iterator[None]:
    """Within the block, bound computations stop (raise) once ``time.monotonic()`` passes
    ``deadline`` (None: no deadline). A nested block never extends the enclosing one's
    deadline (a stage's share of the time ends, at the latest, with the run's)."""
    outer_deadline = _DEADLINE.get()
    if outer_deadline is not None:
        deadline = outer_deadline if deadline is None else min(deadline, outer_deadline)
    # a nested block (a stage's share of the time) keeps the measurements made so far, unless
    # it asks for ``fresh_rates`` (a search whose passes cost differently from the stage
    # before it: use this rather than a new contextvars.Context, which drops the deadline too)
    outer = None if fresh_rates else _RATES.get()
    token, rates = _DEADLINE.set(deadline), _RATES.set({} if outer is None else outer)
    try:
        yield
    finally:
        _RATES.reset(rates)
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """Raise DeadlineExceeded if the current deadline has passed."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"bound computation stopped at its deadline ({deadline:.1f})")


def checked(items: Iterable[T]) -> Iterator[T]:
    """``items``, with the clock read before each: for the per-node loops that copy, cast or
    build a tensor for every value of a network. On a VGG16-size net each such loop takes
    seconds (a branch-and-bound step's set-up went 9 s without a clock read and ran past the
    run's deadline)."""
    for item in items:
        check_deadline()
        yield item


def time_left() -> float:
    """Seconds until the current deadline (inf when none is set): lets a long computation
    decide not to start, or to stop after the chunk it just did, rather than run into it."""
    deadline = _DEADLINE.get()
    return math.inf if deadline is None else deadline - time.monotonic()


# When the current run started and when its first complete bound pass ended (a dict per
# run), so that reports can say how long a model takes to get any sound bound at all.
_PASSES: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "bound_engine_passes", default=None)


@contextmanager
def bound_pass_clock(start: float) -> Iterator[None]:
    """Within the block, :func:`note_bound_pass` records the first complete bound pass, in
    seconds after ``start`` (a ``time.monotonic()`` value)."""
    token = _PASSES.set({"start": start, "first": None})
    try:
        yield
    finally:
        _PASSES.reset(token)


def note_bound_pass() -> None:
    """Record that a complete bound pass (sound bounds of the spec rows) has just ended."""
    passes = _PASSES.get()
    if passes is not None and passes["first"] is None:
        passes["first"] = time.monotonic() - passes["start"]


def first_bound_pass_s() -> float | None:
    """Seconds from the run's start to its first complete bound pass (None: none yet)."""
    passes = _PASSES.get()
    return None if passes is None else passes["first"]


# An optimisation step is autograd's backward through one bound pass (measured at 1-2x the
# pass) plus the next pass: take it only when three passes' time is left.
STEP_COST_IN_PASSES = 3.0


def step_fits(pass_s: float, deadline: float = math.inf) -> bool:
    """True when one more optimisation step (gradient and the next bound pass) after a bound
    pass that took ``pass_s`` seconds ends before the engines' deadline and ``deadline``.
    Autograd's backward cannot check the clock, so the loops ask before they start it."""
    left = min(time_left(), deadline - time.monotonic())
    return left > STEP_COST_IN_PASSES * pass_s


def shared_rates() -> dict | None:
    """The measured-cost memo of the current deadline block (None outside one)."""
    return _RATES.get()


# A chunk of a rate-sized loop should take about this long, so the clock is read at least
# this often; the first chunk is small because nothing is known about the rate yet.
CHUNK_TARGET_S = 0.2
FIRST_CHUNK_ELEMENTS = 4096


def timed_chunks(n_items: int, item_elements: int, run: Callable[[int, int], T],
                 target_s: float | None = None, key: tuple | None = None) -> list[T]:
    """``run(start, stop)`` over ``range(n_items)`` in chunks sized from the measured cost per
    item so that each takes about ``target_s``, with a clock check before each chunk.

    Per-element costs of the same call differ by 100x between ops (a Gelu relaxation bisects
    for its tangent points, a Sin one does not), so a fixed element count per chunk is either
    too coarse for the deadline or too fine for speed. ``key``: the kind of work, whose cost
    per element the deadline block remembers (``shared_rates``), so a later call (the next
    alpha iteration's relaxation of the same node) sizes its first chunk from it instead of
    probing with a small one (each extra chunk costs its results' concatenation)."""
    target_s = CHUNK_TARGET_S if target_s is None else target_s
    memo = shared_rates() if key is not None else None
    known = None if memo is None else memo.get(key)
    if known is None:
        step = max(1, FIRST_CHUNK_ELEMENTS // max(item_elements, 1))
    else:
        step = max(1, int(target_s / (known * max(item_elements, 1))))
    out, start = [], 0
    while start < n_items:
        check_deadline()
        stop = min(n_items, start + step)
        began = time.monotonic()
        out.append(run(start, stop))
        per_item = max(time.monotonic() - began, 1e-6) / (stop - start)
        if memo is not None:
            memo[key] = per_item / max(item_elements, 1)
        step = max(1, int(target_s / per_item))
        start = stop
    return out
