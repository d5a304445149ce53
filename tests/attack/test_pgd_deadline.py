"""PGD ends by its deadline when its steps slow down (a loaded machine): on a simulated
clock, steps 15% slower each time, a deadline placed where the last step's time is left but
not the next one's."""

from __future__ import annotations

import numpy as np
import torch
from conftest import mlp_graph

import verifier.attack.pgd as pgd_module
from verifier.attack import TorchCondition
from verifier.spec.types import OutputCondition


def test_pgd_stops_before_a_step_that_would_overrun(monkeypatch):
    graph = mlp_graph([(np.array([[1.0, -1.0], [0.5, 2.0]]), np.zeros(2)),
                       (np.array([[1.0, 1.0]]), np.zeros(1))])
    cond = TorchCondition.from_condition(
        OutputCondition(np.array([[[-1.0]]]), np.array([[-100.0]])), "cpu", torch.float32)
    clock = {"now": 0.0, "calls": 0}
    real_outputs = pgd_module.graph_outputs

    def slowing_outputs(g, x, **kw):  # step i takes 0.1 * 1.15**i simulated seconds
        clock["now"] += 0.1 * 1.15 ** clock["calls"]
        clock["calls"] += 1
        return real_outputs(g, x, **kw)

    monkeypatch.setattr(pgd_module.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(pgd_module, "graph_outputs", slowing_outputs)
    # after two steps (0.1 + 0.115 s) 0.12 s is left: more than the last step took (0.115),
    # less than the next one takes (0.13225)
    deadline = 0.1 + 0.115 + 0.12
    x = torch.zeros((4, 2))
    lo, hi = torch.full((4, 2), -1.0), torch.ones((4, 2))
    pgd_module.pgd(graph, cond, x, lo, hi, steps=50, deadline=deadline)
    assert clock["calls"] >= 2
    assert clock["now"] <= deadline
