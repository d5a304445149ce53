"""An attack's batch starts only when it is predicted to end before the deadline
(``verifier.attack.pass_time``): predictions from above, forward passes that stop short of
the deadline on a simulated clock, and PGD's first step sized by its batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import mlp_graph

import verifier.attack.pgd as pgd_module
from verifier.attack import TorchCondition, pass_time
from verifier.spec.types import OutputCondition


def _graph():
    return mlp_graph([(np.array([[1.0, -1.0], [0.5, 2.0]]), np.zeros(2)),
                      (np.array([[1.0, 1.0]]), np.zeros(1))])


def _cond():
    return TorchCondition.from_condition(
        OutputCondition(np.array([[[-1.0]]]), np.array([[-100.0]])), "cpu", torch.float32)


def test_prediction_is_from_above_for_an_affine_cost():
    graph = _graph()
    assert pass_time.predict(graph, "forward", 10) == 0.0 and not pass_time.known(graph)

    def cost(n):  # a fixed overhead plus a per-point part
        return 0.01 + 0.001 * n

    pass_time.record(graph, "forward", 8, cost(8))
    pass_time.record(graph, "forward", 100, cost(100))
    for n in (1, 8, 50, 100, 101, 1000, 5000):
        assert pass_time.predict(graph, "forward", n) >= cost(n)
    # a batch no larger than a timed one is predicted by the timed one, not scaled
    assert pass_time.predict(graph, "forward", 100) == pytest.approx(cost(100))
    # steps with no record of their own are guessed from the forwards, from above
    assert pass_time.predict(graph, "step", 100) == pytest.approx(
        pass_time.STEP_OVER_FORWARD * cost(100))


def test_forwards_are_guessed_from_steps():
    graph = _graph()
    pass_time.record(graph, "step", 16, 0.2)
    assert pass_time.predict(graph, "forward", 16) == pytest.approx(0.2)
    assert pass_time.predict(graph, "forward", 32) == pytest.approx(0.4)


def test_affordable_is_the_largest_batch_that_fits():
    graph = _graph()
    pass_time.record(graph, "forward", 10, 1.0)  # 0.1 s per point above 10 points
    now = 100.0
    assert pass_time.affordable(graph, "forward", 50, math.inf, now) == 50
    n = pass_time.affordable(graph, "forward", 50, now + 3.0, now)
    assert pass_time.fits(graph, "forward", n, now + 3.0, now)
    assert not pass_time.fits(graph, "forward", n + 1, now + 3.0, now)
    assert 10 <= n < 50
    assert pass_time.affordable(graph, "forward", 50, now, now) == 0


def _simulated(monkeypatch, per_point_s: float, overhead_s: float = 0.0):
    """A clock that advances by overhead + per point on every forward pass."""
    clock = {"now": 0.0, "points": []}
    real_outputs = pgd_module.graph_outputs

    def timed_outputs(g, x, **kw):
        clock["now"] += overhead_s + per_point_s * len(x)
        clock["points"].append(len(x))
        return real_outputs(g, x, **kw)

    monkeypatch.setattr(pgd_module.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(pgd_module, "graph_outputs", timed_outputs)
    return clock


def test_evaluate_probes_an_untimed_graph_and_stops_before_the_deadline(monkeypatch):
    graph, cond = _graph(), _cond()
    clock = _simulated(monkeypatch, per_point_s=0.01)
    x = torch.zeros((1000, 2))
    deadline = 2.0  # 200 of the 1000 points fit
    loss = pgd_module.evaluate(graph, cond, x, chunk=500, deadline=deadline)
    assert clock["points"][0] == pgd_module.PROBE_POINTS
    assert clock["now"] <= deadline
    done = torch.isfinite(loss)
    assert 100 <= int(done.sum()) < 1000
    assert bool(done[:int(done.sum())].all())  # the points reached are the first ones
    # with no deadline every point is evaluated, in chunks of at most 500
    full = pgd_module.evaluate(graph, cond, x, chunk=500)
    assert bool(torch.isfinite(full).all()) and max(clock["points"]) <= 500


def test_pgd_first_step_is_predicted_for_its_batch(monkeypatch):
    """A run of 4 points timed before; a run of 400 does not start its first step when 100
    times that time is not left (the previous rule predicted it from the 4-point step)."""
    graph, cond = _graph(), _cond()
    clock = _simulated(monkeypatch, per_point_s=0.001)
    lo, hi = torch.full((4, 2), -1.0), torch.ones((4, 2))
    pgd_module.pgd(graph, cond, torch.zeros((4, 2)), lo, hi, steps=3)
    small_step = pass_time.predict(graph, "step", 4)
    assert small_step > 0
    calls = len(clock["points"])
    lo, hi = torch.full((400, 2), -1.0), torch.ones((400, 2))
    deadline = clock["now"] + 10 * small_step  # enough for a 4-point step, not a 400-point one
    pgd_module.pgd(graph, cond, torch.zeros((400, 2)), lo, hi, steps=3, deadline=deadline)
    assert len(clock["points"]) == calls
    assert clock["now"] <= deadline


def test_has_gradient_looks_at_the_points_that_fit(monkeypatch):
    graph, cond = _graph(), _cond()
    clock = _simulated(monkeypatch, per_point_s=0.01)
    pass_time.record(graph, "step", 10, 0.1)
    x = torch.rand((1000, 2))
    assert pgd_module.has_gradient(graph, cond, x, deadline=1.0)
    assert clock["now"] <= 1.0 and clock["points"][-1] < 1000
    # no time: nothing is looked at, and nothing is decided against PGD
    calls = len(clock["points"])
    assert pgd_module.has_gradient(graph, cond, x, deadline=clock["now"])
    assert len(clock["points"]) == calls
