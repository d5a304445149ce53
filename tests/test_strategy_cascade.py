"""The bound cascade before a neuron-split search: its steps (``cascade_steps``: the last,
alpha-CROWN on every intermediate value, left to the root of a ReLU search on a conv net) and the
intermediate bounds handed to the search's root: every step's bounds hold, so the root gets them
intersected, never a later step's looser ones (a step cut short by its time leaves values to
intervals)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.types import Interval
from tests.bab.test_genbab import net
from tests.bab.test_neuron_split import region_for, tiny_net
from tests.bounds.test_conv_patches import _conv_1d
from verifier import strategy
from verifier.bab.problem import RegionProblem
from verifier.config import BabConfig, VerifyConfig

FULL = strategy.INCOMPLETE_CASCADE


def config(method: str = "auto", **bab) -> VerifyConfig:
    return VerifyConfig(method=method, bab=BabConfig(**bab))


def test_relu_conv_search_leaves_the_intermediate_alpha_step_to_its_root():
    steps = strategy.cascade_steps(_conv_1d(4), config())
    assert steps == FULL[:-1]
    assert all(s.intermediate_alpha_iterations == 0 for s in steps)
    assert strategy.cascade_steps(_conv_1d(4), config("bab")) == FULL[:-1]


@pytest.mark.parametrize("case", ["switch off", "incomplete", "fully connected", "sigmoid",
                                  "no relu split"])
def test_full_cascade_elsewhere(case):
    graph = {"fully connected": lambda: tiny_net(0, n_in=4, hidden=(8, 8))[0],
             "sigmoid": lambda: net(1, ("Sigmoid", "Sigmoid")),
             "no relu split": lambda: net(1, ("Sigmoid",))}.get(case, lambda: _conv_1d(4))()
    cfg = {"incomplete": lambda: config("incomplete"),
           "switch off": lambda: config(short_cascade=False),
           "no relu split": lambda: config(nonlinear=False)}.get(case, config)()
    assert strategy.cascade_steps(graph, cfg) == FULL


def test_tightest_intersects_each_value():
    old = {"a": Interval(torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 2.0]])),
           "b": Interval(torch.tensor([[0.0]]), torch.tensor([[1.0]]))}
    new = {"a": Interval(torch.tensor([[-2.0, 0.5]]), torch.tensor([[0.5, 3.0]])),
           "c": Interval(torch.tensor([[1.0]]), torch.tensor([[2.0]]))}
    both = strategy.tightest(old, new)
    assert torch.equal(both["a"].lower, torch.tensor([[-1.0, 0.5]]))
    assert torch.equal(both["a"].upper, torch.tensor([[0.5, 2.0]]))
    assert both["c"] is new["c"] and set(both) == {"a", "c"}
    assert strategy.tightest(None, new) is new


def _loosened(res):
    """``res`` with every intermediate value's bounds widened by 10 (a step cut short)."""
    inter = res.intermediates
    wide = {k: Interval(v.lower - 10, v.upper + 10) for k, v in inter.bounds.items()}
    return dataclasses.replace(res, intermediates=dataclasses.replace(inter, bounds=wide))


def test_root_bounds_never_looser_than_an_earlier_step(monkeypatch):
    graph = _conv_1d(4)
    n_in, n_out = int(np.prod(graph.inputs[0].shape)), int(np.prod(graph.outputs[0].shape))
    coef = np.zeros((1, 1, n_out))
    coef[0, 0, :2] = (1.0, -1.0)
    region = region_for(None, n_in, coef, [[100.0]])  # never refuted: every step runs
    problem = RegionProblem.from_region(0, region, "cpu", torch.float64)
    seen, step = [], strategy._cascade_step

    def later_looser(graph, problem, options, deadline, **kw):
        res = step(graph, problem, options, deadline, **kw)
        res = res if not seen else _loosened(res)
        seen.append(res.intermediate)
        return res

    monkeypatch.setattr(strategy, "_cascade_step", later_looser)
    bounds: dict = {}
    assert not strategy.region_refuted(graph, problem, time.monotonic() + 60, bounds=bounds)
    assert len(seen) == len(strategy.INCOMPLETE_CASCADE)
    x = problem.lower + (problem.upper - problem.lower) * torch.rand(2000, n_in,
                                                                     dtype=torch.float64)
    values = run_graph(graph, x.reshape(-1, *graph.inputs[0].shape), keep_all=True)
    for k, b in bounds[0].items():
        first = seen[0][k]
        assert bool((b.lower >= first.lower).all()) and bool((b.upper <= first.upper).all())
        if k in values:
            v = values[k].flatten(1)
            assert bool((v >= b.lower.flatten(1) - 1e-9).all())
            assert bool((v <= b.upper.flatten(1) + 1e-9).all())


def _open_problem(graph) -> RegionProblem:
    n_in, n_out = int(np.prod(graph.inputs[0].shape)), int(np.prod(graph.outputs[0].shape))
    coef = np.zeros((1, 1, n_out))
    coef[0, 0, :2] = (1.0, -1.0)
    return RegionProblem.from_region(0, region_for(None, n_in, coef, [[100.0]]), "cpu",
                                     torch.float64)


@pytest.mark.parametrize("ample", [True, False])
def test_short_cascade_leaves_the_root_to_bound_itself_when_the_step_would_have_run(
        monkeypatch, ample):
    """With time for the step left out (DEEP_COST_FACTOR times the last step's cost), the
    region gets no root bounds (the root runs alpha-CROWN itself); without, the cascade's."""
    graph = _conv_1d(4)
    if not ample:
        monkeypatch.setattr(strategy, "DEEP_COST_FACTOR", 1e9)
    ran, step = [], strategy._cascade_step

    def counted(graph, problem, options, deadline, **kw):
        ran.append(options)
        return step(graph, problem, options, deadline, **kw)

    monkeypatch.setattr(strategy, "_cascade_step", counted)
    bounds: dict = {}
    steps = strategy.cascade_steps(graph, config())
    assert not strategy.region_refuted(graph, _open_problem(graph), time.monotonic() + 60,
                                       bounds=bounds, cascade=steps)
    assert ran == list(steps[:len(ran)]) and len(ran) == (len(steps) if ample else 1)
    assert (0 in bounds) != ample
