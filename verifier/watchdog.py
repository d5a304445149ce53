"""The hard end of a run: its answer comes by the timeout even when a stage overruns.

Every stage reads the clock and stops before its deadline, but some pieces cannot read it (a
backward pass over a large model, a batch of forward passes, a solver call), and under load
they run longer than their estimates. ``run_until`` runs the work in a thread and waits for
it until the hard deadline; if the work is still running then, the caller answers ``timeout``
on time and the thread is abandoned: it ends on its own at its next deadline check (its
answer is ignored).

An overrun is still a bug: the abandoned stage is logged with where it was (its innermost
frames), and ``VerificationResult.stats["abandoned"]`` names it, so benchmarks count it.
A process that abandoned work should not start the next run while that work still runs
(``abandoned_running``): the bench and the server recycle such a worker; the CLI exits
without waiting for it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Frames of the abandoned thread named in the log and the result (innermost last). Eight: four
# named only the engine's forward pass in an attack's overrun, not the attack phase that ran it.
FRAMES_SHOWN = 8

_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()


@dataclass(frozen=True)
class Finished(Generic[T]):
    value: T


@dataclass(frozen=True)
class Abandoned:
    """The work was still running at the hard deadline; ``where``: its innermost frames."""

    where: str


def run_until(hard_deadline: float, work: Callable[[], T],
              name: str = "nncert-run") -> Finished[T] | Abandoned:
    """``work()``'s value, or Abandoned if it has not returned by ``hard_deadline``
    (time.monotonic seconds). Exceptions raised by ``work`` are raised here. The work runs
    in a copy of the caller's context (context variables carry over)."""
    done = threading.Event()
    box: dict = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(work)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    done.wait(max(0.0, hard_deadline - time.monotonic()))
    if not done.is_set():
        where = _where(thread)
        with _abandoned_lock:
            _abandoned.append(thread)
        log.warning("a stage was still running at the hard deadline (a stage overran its "
                    "deadline: a bug); answering timeout, abandoned at %s", where)
        return Abandoned(where)
    if "error" in box:
        raise box["error"]
    return Finished(box["value"])


def abandoned_running() -> bool:
    """Whether work abandoned in this process is still running."""
    with _abandoned_lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        return bool(_abandoned)


def _where(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return "(finished)"
    stack = traceback.extract_stack(frame)
    stack = [f for f in stack if f.filename not in (__file__, threading.__file__)]
    ours = [f for f in stack if _ours(f.filename)] or stack
    stack = ours[-FRAMES_SHOWN:]
    return " <- ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack))


_PACKAGES = ("bounds/", "verifier/", "server/", "tests/")
_STDLIB = sysconfig.get_paths()["stdlib"]


def _ours(path: str) -> bool:
    """Not a library's file (torch, numpy, the standard library): where the stage is."""
    return "/site-packages/" not in path and not path.startswith(_STDLIB)


def _short(path: str) -> str:
    for root in _PACKAGES:
        cut = path.rfind("/" + root)
        if cut >= 0:
            return path[cut + 1:]
    return path.rsplit("/", 1)[-1]
