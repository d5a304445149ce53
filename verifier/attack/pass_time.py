"""How long an attack's batch on a graph takes, predicted from its recent batches, so that a
batch starts only when it is expected to end before the attack's deadline.

Two kinds of batch: a forward pass ("forward": evaluating points) and a PGD step ("step":
forward and backward). Each record keeps the batch's size and seconds. A batch of n points
is predicted to take the longest recent batch of at least n points, or, when every recent
batch was smaller, the largest of their times scaled up linearly to n (a pass costs a fixed
overhead plus a per-point part, so both guesses are from above). A forward pass with no
record of its own is guessed from the steps (a step holds one), a step from the forwards
times STEP_OVER_FORWARD.

Why: an attack stage overran its deadline by 0.12 s (cifar10_resnet resnet_2b prop_20, two
benches side by side) in a forward pass that started after only a check of the clock; the
PGD step before it had predicted its first step from the previous run's step alone, whatever
that run's batch size.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque

from verifier.step_timer import SAFETY

KINDS = ("forward", "step")
HISTORY = 8
# A PGD step (forward and backward) against a forward pass of the same batch, from above.
STEP_OVER_FORWARD = 4.0

_RECORDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _records(graph, kind: str) -> deque:
    per_graph = _RECORDS.setdefault(graph, {k: deque(maxlen=HISTORY) for k in KINDS})
    return per_graph[kind]


def record(graph, kind: str, n: int, seconds: float) -> None:
    """A batch of n points of this kind took ``seconds``."""
    if n > 0:
        _records(graph, kind).append((int(n), float(seconds)))


def _predict_from(records, n: int) -> float | None:
    if not records:
        return None
    covering = [s for m, s in records if m >= n]
    if covering:
        return max(covering)
    return max(s * n / m for m, s in records)


def predict(graph, kind: str, n: int) -> float:
    """Seconds a batch of n points is expected to take (0.0: nothing known yet)."""
    if graph not in _RECORDS or n <= 0:
        return 0.0
    own = _predict_from(_records(graph, kind), n)
    if own is not None:
        return own
    other = _predict_from(_records(graph, "step" if kind == "forward" else "forward"), n)
    if other is None:
        return 0.0
    return other if kind == "forward" else STEP_OVER_FORWARD * other


def known(graph) -> bool:
    """Whether any batch on this graph was timed."""
    return graph in _RECORDS and any(_RECORDS[graph][k] for k in KINDS)


def fits(graph, kind: str, n: int, deadline: float, now: float | None = None) -> bool:
    """Whether a batch of n points started ``now`` is expected to end before ``deadline``."""
    if deadline == math.inf:
        return True
    now = time.monotonic() if now is None else now
    return now + SAFETY * predict(graph, kind, n) < deadline


def affordable(graph, kind: str, n: int, deadline: float, now: float | None = None) -> int:
    """The largest batch of at most n points expected to end before ``deadline`` (0: none)."""
    if fits(graph, kind, n, deadline, now):
        return n
    lo, hi = 0, n  # fits(lo) holds (lo = 0 trivially), fits(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(graph, kind, mid, deadline, now):
            lo = mid
        else:
            hi = mid
    return lo
