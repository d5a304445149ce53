"""The bound cascade's cheaper steps: a plain-CROWN step after another starts from its bounds
(the same bounds, no CROWN pass again), every step intersects the earlier bounds in (never
looser, still enclosing the net's values), and the alpha loops stop once the region is refuted
or their pace says it will not be (``verifier.bab.cascade_stop``)."""

from __future__ import annotations

import time

import numpy as np
import torch

from bounds.engine.deadline import engine_deadline
from bounds.engine.forward import run_graph
from tests.bab.test_neuron_split import region_for, tiny_net
from verifier import strategy
from verifier.bab.cascade_stop import MIN_PASSES, RefuteOrGiveUp
from verifier.bab.problem import RegionProblem

FULL = strategy.INCOMPLETE_CASCADE


def _problem(graph, rhs: float, n_in: int = 4, rows: int = 1) -> RegionProblem:
    n_out = int(np.prod(graph.outputs[0].shape))
    coef = np.zeros((rows, 1, n_out))
    for d in range(rows):
        coef[d, 0, 0], coef[d, 0, 1 + d % (n_out - 1)] = 1.0, -1.0
    region = region_for(None, n_in, coef, [[rhs]] * rows, lo=-0.3, hi=0.3)
    return RegionProblem.from_region(0, region, "cpu", torch.float64)


def _rows(values) -> torch.Tensor:
    """[1, S] bounds of a one-row-per-disjunct problem."""
    return torch.tensor([values], dtype=torch.float64)


def test_stops_once_every_disjunct_is_refuted():
    graph, _ = tiny_net(0)
    stop = RefuteOrGiveUp(_problem(graph, 0.0, rows=2), 20)
    assert not stop(_rows([0.5, -1.0]))
    assert stop(_rows([0.5, 0.1]))


def test_gives_up_only_when_the_recent_pace_cannot_reach_zero():
    graph, _ = tiny_net(0)
    problem = _problem(graph, 0.0, rows=2)
    slow, fast = RefuteOrGiveUp(problem, 20), RefuteOrGiveUp(problem, 20)
    for k in range(MIN_PASSES):
        # disjunct 0 gains 0.01 per pass from -1: 17 passes left cannot make up 0.97
        assert not slow(_rows([-1.0 + 0.01 * k, 1.0])) or k == MIN_PASSES - 1
        # gains 0.1 per pass from -1: 17 passes left reach +0.7
        assert not fast(_rows([-1.0 + 0.1 * k, 1.0]))
    assert slow.gave_up and not fast.gave_up


def test_never_gives_up_with_the_switch_off_nor_before_enough_passes():
    graph, _ = tiny_net(0)
    problem = _problem(graph, 0.0)
    off, early = RefuteOrGiveUp(problem, 20, give_up=False), RefuteOrGiveUp(problem, 20)
    assert not any(off(_rows([-100.0])) for _ in range(10))
    assert not any(early(_rows([-100.0])) for _ in range(MIN_PASSES - 1))
    assert off(_rows([1.0]))  # refuted still stops


def test_padding_rows_do_not_block_a_refuted_disjunct():
    graph, _ = tiny_net(0)
    problem = _problem(graph, 0.0, rows=1)
    stop = RefuteOrGiveUp(problem, 20)
    assert stop(_rows([0.2]))
    stuck = RefuteOrGiveUp(problem, 20)
    assert [stuck(_rows([-torch.inf])) for _ in range(MIN_PASSES)][-1]


def _cascade_results(graph, problem, reuse: bool):
    out, res = [], None
    with engine_deadline(time.monotonic() + 60):
        for options in FULL:
            res = strategy._cascade_step(graph, problem, options, time.monotonic() + 60,
                                         given=res if reuse else None, give_up=False)
            out.append(res)
    return out


def test_crown_step_after_crown_takes_the_same_bounds_and_later_steps_only_tighten():
    graph, _ = tiny_net(3, hidden=(6, 6, 6))
    problem = _problem(graph, 100.0)  # never refuted: every step runs
    fresh, reused = _cascade_results(graph, problem, False), _cascade_results(graph, problem, True)
    for k, v in fresh[1].intermediate.items():
        assert torch.equal(reused[1].intermediate[k].lower, v.lower), k
        assert torch.equal(reused[1].intermediate[k].upper, v.upper), k
    assert bool((reused[1].lower >= fresh[1].lower - 1e-9).all())
    x = problem.lower + (problem.upper - problem.lower) * torch.rand(3000, 4,
                                                                     dtype=torch.float64)
    values = run_graph(graph, x.reshape(-1, *graph.inputs[0].shape), keep_all=True)
    for k, b in reused[2].intermediate.items():
        first = reused[0].intermediate[k]
        assert bool((b.lower >= first.lower).all()) and bool((b.upper <= first.upper).all())
        if k in values:
            v = values[k].flatten(1)
            assert bool((v >= b.lower.flatten(1)).all()) and bool((v <= b.upper.flatten(1)).all())
    y = values[graph.outputs[0].name].flatten(1)
    spec = y @ problem.coef.T - problem.rhs
    assert bool((spec >= reused[2].lower).all())


def test_region_refuted_reuses_the_previous_steps_bounds(monkeypatch):
    graph, _ = tiny_net(3, hidden=(6, 6, 6))
    seen, step = [], strategy._cascade_step

    def spy(graph, problem, options, deadline, **kw):
        seen.append(kw.get("given"))
        return step(graph, problem, options, deadline, **kw)

    monkeypatch.setattr(strategy, "_cascade_step", spy)
    assert not strategy.region_refuted(graph, _problem(graph, 100.0), time.monotonic() + 60)
    assert seen[0] is None and all(g is not None for g in seen[1:]) and len(seen) == len(FULL)


def test_gives_up_on_relu_nets_only():
    from tests.bab.test_genbab import net
    from verifier.config import VerifyConfig

    assert strategy.cascade_give_up(tiny_net(0)[0], VerifyConfig())
    assert not strategy.cascade_give_up(net(1, ("Sigmoid", "Sigmoid")), VerifyConfig())


def test_switch_off_never_gives_up():
    from verifier.config import BabConfig, VerifyConfig

    off = VerifyConfig(bab=BabConfig(cascade_give_up=False))
    assert not strategy.cascade_give_up(tiny_net(0)[0], off)
    assert strategy.cascade_give_up(tiny_net(0)[0], VerifyConfig())
