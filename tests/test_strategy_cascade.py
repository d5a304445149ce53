"""The bound cascade before a neuron-split search (``strategy.cascade_steps``): its last step
(alpha-CROWN on every intermediate value) is left out where a ReLU search follows on a conv
net (the search's root refines those bounds itself), and kept everywhere else."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.bab.test_genbab import net
from tests.bab.test_neuron_split import region_for, tiny_net
from tests.bounds.test_conv_patches import _conv_1d
from verifier import strategy
from verifier.bab.problem import RegionProblem
from verifier.config import BabConfig, VerifyConfig

FULL = strategy.INCOMPLETE_CASCADE


def config(method: str = "auto", **bab) -> VerifyConfig:
    return VerifyConfig(method=method, bab=BabConfig(**bab))


def test_relu_conv_search_skips_the_intermediate_alpha_step():
    steps = strategy.cascade_steps(_conv_1d(4), config())
    assert steps == FULL[:-1]
    assert all(s.intermediate_alpha_iterations == 0 for s in steps)
    assert strategy.cascade_steps(_conv_1d(4), config("bab")) == FULL[:-1]


@pytest.mark.parametrize("case", ["switch off", "incomplete", "fully connected", "sigmoid"])
def test_full_cascade_elsewhere(case):
    graph = tiny_net(0, n_in=4, hidden=(8, 8))[0] if case == "fully connected" else \
        net(1, ("Sigmoid", "Sigmoid")) if case == "sigmoid" else _conv_1d(4)
    cfg = config("incomplete") if case == "incomplete" else \
        config(short_cascade=False) if case == "switch off" else config()
    assert strategy.cascade_steps(graph, cfg) == FULL


def test_only_relus_split_counts_as_relu_only():
    """With GenBaB off a sigmoid net's search splits Relus only; no Relu: full cascade."""
    assert strategy.cascade_steps(net(1, ("Sigmoid",)), config(nonlinear=False)) == FULL


@pytest.mark.parametrize("short", [True, False])
def test_region_refuted_runs_the_steps_given(monkeypatch, short):
    graph = _conv_1d(4)
    n_in, n_out = graph.inputs[0].shape, graph.outputs[0].shape
    coef = np.zeros((1, 1, int(np.prod(n_out))))
    coef[0, 0, :2] = (1.0, -1.0)
    region = region_for(None, int(np.prod(n_in)), coef, [[100.0]])  # never refuted
    problem = RegionProblem.from_region(0, region, "cpu", torch.float64)
    ran, step = [], strategy._cascade_step

    def counted(graph, problem, options, deadline):
        ran.append(options)
        return step(graph, problem, options, deadline)

    monkeypatch.setattr(strategy, "_cascade_step", counted)
    steps = strategy.cascade_steps(graph, config(short_cascade=short))
    costs: dict = {}
    assert not strategy.region_refuted(graph, problem, time.monotonic() + 60, costs,
                                       cascade=steps)
    assert ran == list(steps) and sorted(costs) == list(range(len(steps)))
