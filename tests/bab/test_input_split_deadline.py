"""Input splitting ends by its deadline when its steps slow down: a step starts only when 1.25x
the slowest recent step fits (a step's forward passes, attacks and splits do not read the
clock). Simulated clock: every bound call of step i takes 0.1 * 1.15**i s."""

from __future__ import annotations

import numpy as np

import verifier.bab.input_split as input_split
from tests.bab.exact import exact_min
from tests.bab.test_input_split import make_search
from tests.bab.test_neuron_split import region_for, tiny_net


def _very_hard_unsat():
    """A threshold 1e-6 below the exact minimum: thousands of splits, far more than 3 steps."""
    graph, exact = tiny_net(4, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    return graph, region_for(exact, 3, c[None, None], [[m - 1e-6]])


def test_slowing_steps_end_by_the_deadline(monkeypatch):
    clock = {"now": 0.0, "steps": 0}
    monkeypatch.setattr(input_split.time, "monotonic", lambda: clock["now"])
    graph, region = _very_hard_unsat()
    # (one domain a step: every step does the same work, only slower)
    search = make_search(graph, region, deadline_s=0.0, batch=1)
    # steps 0.1, 0.115, 0.13225 s: after two, 0.12 s is left, more than the last step took
    # and less than the next one takes
    search.deadline = 0.1 + 0.115 + 0.12
    real_bound = search.bound

    def slowing_bound(*args, **kwargs):
        clock["now"] += 0.1 * 1.15 ** clock["steps"]
        clock["steps"] += 1
        return real_bound(*args, **kwargs)

    search.bound = slowing_bound
    out = search.run()
    assert out.verdict == "timeout"
    assert clock["steps"] >= 2
    assert clock["now"] <= search.deadline

