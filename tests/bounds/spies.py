"""Test helpers that watch the engines from outside: a spy that records every call of a
function (its arguments and result) while calling through, and a clock that stands still until
a test moves it (deadline tests that do not depend on the machine's speed or load)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    """One recorded call: its positional and keyword arguments and what it returned."""

    args: tuple
    kwargs: dict
    result: Any


class Spy(list):
    """The calls of a spied function, in order (a list of ``Call``)."""

    @property
    def results(self) -> list:
        return [c.result for c in self]


def spy(monkeypatch, owner: Any, name: str) -> Spy:
    """Replace ``owner.name`` (a module's function, or a class's method: the instance then
    comes first in ``Call.args``) for the test by a wrapper that calls the real one and records
    the call; returns the (growing) list of calls."""
    calls = Spy()
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(Call(args, kwargs, result))
        return result

    monkeypatch.setattr(owner, name, wrapped)
    return calls


class StillClock:
    """A stand-in for the ``time`` module whose ``monotonic()`` stands still at ``now`` until
    a test moves it (``jump``); every other attribute is the real module's."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def jump(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
