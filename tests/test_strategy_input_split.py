"""What an input-split search that stops short leaves to the run (``strategy._input_split``):
seconds left that no step fits go to a last attack, as after a neuron-split search, and the
answer is ``unknown`` naming why (or ``sat`` from that attack); ``timeout`` only when no time
is left for one."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.bab.test_neuron_split import region_for, tiny_net
from verifier import strategy
from verifier.bab import input_split
from verifier.bab.input_split import BabOutcome
from verifier.bab.problem import RegionProblem
from verifier.config import VerifyConfig
from verifier.spec.types import Spec


class Attacks:
    """The run's attacks: counts its calls and returns ``found``."""

    def __init__(self, found=None):
        self.calls, self.found = 0, found

    def run(self, deadline, budget_s=None):
        self.calls += 1
        return self.found


def run_input_split(monkeypatch, verdict: str, seconds_left: float, attacks: Attacks):
    graph, exact = tiny_net(0, n_in=2, hidden=(4,))
    region = region_for(exact, 2, [[[1.0, -1.0, 0.0]]], [[0.0]])
    spec = Spec((region,), 2, 3)
    problems = [RegionProblem.from_region(0, region, torch.device("cpu"), torch.float64)]
    monkeypatch.setattr(input_split.InputSplitSearch, "run",
                        lambda self: BabOutcome(verdict, stats={"steps": 1}))
    return strategy._input_split(SimpleNamespace(graph=graph), spec, VerifyConfig(), problems,
                                 time.monotonic() + seconds_left, None, attacks)


@pytest.mark.parametrize(("verdict", "reason"), [
    ("timeout", "no step fitting"), ("unknown", "bounds did not settle")])
def test_time_left_goes_to_a_last_attack_and_unknown_names_why(monkeypatch, verdict, reason):
    attacks = Attacks()
    res = run_input_split(monkeypatch, verdict, 30.0, attacks)
    assert attacks.calls == 1
    assert res.verdict == "unknown" and reason in res.message
    assert res.stats["region_0"] == {"steps": 1}


def test_the_last_attack_can_answer_sat(monkeypatch):
    cex = SimpleNamespace(x=np.zeros(2))
    res = run_input_split(monkeypatch, "timeout", 30.0, Attacks(found=cex))
    assert res.verdict == "sat" and res.counterexample is cex


def test_no_time_left_is_a_timeout_without_an_attack(monkeypatch):
    attacks = Attacks()
    res = run_input_split(monkeypatch, "timeout", 0.5 * strategy.LAST_ATTACK_MIN_S, attacks)
    assert res.verdict == "timeout" and attacks.calls == 0
