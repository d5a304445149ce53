"""The engines' deadline: bound computations stop (raise) once it has passed, never return a
half-finished bound, and the verification pipeline turns that into a ``timeout`` answer."""

from __future__ import annotations

import time

import pytest
import torch

from bounds.engine.deadline import DeadlineExceeded, check_deadline, engine_deadline
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


def _problem():
    graph = random_mlp([4, 16, 16, 3], seed=0)
    box = Interval(-torch.ones((2, 1, 4), dtype=F64), torch.ones((2, 1, 4), dtype=F64))
    return graph, box, torch.ones((1, 1, 3), dtype=F64), torch.zeros((1, 1), dtype=F64)


def test_no_deadline_by_default_and_nested_contexts_restore():
    check_deadline()  # nothing set: never raises
    with engine_deadline(time.monotonic() - 1):
        with pytest.raises(DeadlineExceeded):
            check_deadline()
        with engine_deadline(None):
            check_deadline()
        with pytest.raises(DeadlineExceeded):
            check_deadline()
    check_deadline()


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
def test_bound_spec_stops_past_the_deadline(method):
    graph, box, coef, rhs = _problem()
    with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        bound_spec(graph, box, coef, rhs, BoundOptions(method=method))
    with engine_deadline(time.monotonic() + 60):  # a future deadline changes nothing
        inside = bound_spec(graph, box, coef, rhs, BoundOptions(method=method)).lower
    outside = bound_spec(graph, box, coef, rhs, BoundOptions(method=method)).lower
    assert torch.equal(inside, outside)


def test_alpha_stops_between_iterations(monkeypatch):
    """The deadline passing during alpha-CROWN's iterations ends the call."""
    import bounds.engine.alpha as alpha

    graph, box, coef, rhs = _problem()
    calls = {"n": 0}
    real = alpha.backward_bound

    def slow(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(alpha, "backward_bound", slow)
    with engine_deadline(time.monotonic() + 0.2), pytest.raises(DeadlineExceeded):
        bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha", alpha_iterations=50))
    assert calls["n"] < 50


def test_pipeline_answers_timeout_when_the_engines_stop(monkeypatch):
    import verifier.strategy as strategy
    from verifier.config import VerifyConfig

    def stopped(*args, **kwargs):
        raise DeadlineExceeded("test")

    monkeypatch.setattr(strategy, "_run_methods", stopped)
    result = strategy.run_methods(None, None, VerifyConfig(), "cpu", time.monotonic() + 1)
    assert result.verdict == "timeout"
    assert "deadline" in result.message
