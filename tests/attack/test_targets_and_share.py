"""Targeted PGD restarts, the Falsifier's state between calls, and the attack's time share."""

from __future__ import annotations

import importlib
import math
import time

import numpy as np
import pytest
import torch

from tests.attack.conftest import make_spec, mlp_model
from verifier.attack.falsify import Falsifier
from verifier.attack.objective import TorchCondition
from verifier.attack.pgd import attack_boxes, targets
from verifier.attack.share import HOPELESS_RATIO, MAX_SHARE, attack_share
from verifier.config import AttackConfig

N = 20


def decoy_instance():
    """y = (0, -0.1 + 0.01 x0, -(N - 0.5) + sum x) on [-1, 1]^N; unsafe: y1 >= y0 or y2 >= y0.

    The first disjunct never holds but is always the closer one (loss about 0.1 against
    about N), so the min over disjuncts moves x0 alone; only a descent on the second
    disjunct reaches its violations, the corner region sum x >= N - 0.5."""
    w = np.zeros((3, N))
    w[1, 0] = 0.01
    w[2, :] = 1.0
    b = np.array([0.0, -0.1, -(N - 0.5)])
    coef = [[[1.0, -1.0, 0.0]], [[1.0, 0.0, -1.0]]]  # y0 - y1 <= 0 or y0 - y2 <= 0
    return mlp_model([(w, b)]), make_spec(-np.ones(N), np.ones(N), coef, [[0.0], [0.0]])


def test_targeted_loss_is_the_chosen_disjunct_and_minus_one_the_min():
    cond = TorchCondition.from_condition(decoy_instance()[1].regions[0].condition, "cpu",
                                         torch.float64)
    y = torch.tensor([[0.0, -0.5, -2.0], [1.0, 3.0, 0.0]], dtype=torch.float64)
    full = cond.loss(y)
    assert torch.equal(full, torch.tensor([0.5, -2.0], dtype=torch.float64))
    assert torch.equal(cond.loss(y, target=torch.tensor([1, 0])), torch.tensor(
        [2.0, -2.0], dtype=torch.float64))
    assert torch.equal(cond.loss(y, target=torch.tensor([-1, -1])), full)


def test_targets_leave_each_box_first_start_untargeted_and_cycle():
    assert targets(torch.arange(4), 1) is None
    got = targets(torch.tensor([0, 1, 2, 3, 4]), 3, offset=5)
    assert got.tolist() == [-1, 2, 0, 1, 2]


def test_targeted_restarts_reach_what_the_min_over_disjuncts_misses():
    model, spec = decoy_instance()
    region = spec.regions[0]
    found = {}
    for targeted in (False, True):
        res = attack_boxes(model.graph, region.lower[None], region.upper[None],
                           region.condition, steps=50, restarts=3, targeted=targeted,
                           generator=torch.Generator().manual_seed(0))
        found[targeted] = float(res.loss.min())
    assert found[False] > 0.05  # stuck on the decoy disjunct
    assert found[True] <= 0


def test_falsifier_goes_on_where_it_stopped():
    model, spec = decoy_instance()
    spec = make_spec(-np.ones(N), np.ones(N), [[[1.0, -1.0, 0.0]]], [[0.0]])  # holds: none
    attacks = Falsifier(model, spec, AttackConfig(), seed=0)
    assert math.isinf(attacks.best_loss)
    assert attacks.run(time.monotonic() + 5, budget_s=0.3) is None
    first_loss, first_round = attacks.best_loss, attacks.round
    assert math.isfinite(first_loss) and first_loss > 0
    groups = attacks.groups
    assert attacks.run(time.monotonic() + 5, budget_s=0.3) is None
    assert attacks.groups is groups  # no second round of cheap points
    assert attacks.round >= first_round and attacks.best_loss <= first_loss


def test_falsifier_finds_the_decoy_violation():
    model, spec = decoy_instance()
    cex = Falsifier(model, spec, AttackConfig(), seed=1).run(time.monotonic() + 10,
                                                              budget_s=10)
    assert cex is not None and spec.regions[0].condition.holds(cex.y)


@pytest.mark.parametrize(("loss", "margin", "share"), [
    (1.0, None, 0.0),  # no bounds: nothing to weigh
    (1.0, 0.5, 0.0),  # a margin >= 0 is a proof
    (1.0, -1.0 / HOPELESS_RATIO, 0.0),  # at the ratio: the search keeps its time
    (1.0, -100.0, 0.15),  # one decade below it
    (1e-6, -1e6, MAX_SHARE),  # capped
    (0.0, -1.0, MAX_SHARE),  # the IR saw a violation that onnxruntime rejected
    (math.inf, -10.0, 0.0),  # the attack evaluated nothing
    (1.0, -math.inf, MAX_SHARE),
])
def test_attack_share(loss, margin, share):
    assert attack_share(loss, margin) == pytest.approx(share)


def test_attack_share_grows_as_the_bounds_look_hopeless():
    shares = [attack_share(0.2, -m) for m in (1, 10, 100, 1e3, 1e4, 1e5)]
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] == MAX_SHARE


def test_a_guided_phase_cut_short_in_a_short_attack_runs_again(monkeypatch):
    """A bound pass that gives no points in a half-second attack is tried again by the next
    call with more time; once it ran with ample time it is not repeated."""
    # (the package exports the function ``falsify`` under the module's name)
    falsify_module = importlib.import_module("verifier.attack.falsify")
    calls = []

    def no_points(*args, **kwargs):
        calls.append(args[4] - time.monotonic())  # the bound pass's deadline, from now
        return None

    monkeypatch.setattr(falsify_module, "bound_vertices", no_points)
    model, _ = decoy_instance()
    spec = make_spec(-np.ones(N), np.ones(N), [[[1.0, -1.0, 0.0]]], [[0.0]])  # holds
    attacks = Falsifier(model, spec, AttackConfig(), seed=0)
    attacks.groups = falsify_module.group_regions(spec, "cpu")
    attacks.stop = time.monotonic() + 0.3  # a half-second attack's stop time
    attacks.guided_phase(attacks.groups)
    assert len(calls) == 1 and not attacks.groups[0].guided
    attacks.stop = time.monotonic() + falsify_module.GUIDED_FIRST_MIN_S + 5
    attacks.guided_phase(attacks.groups)
    assert len(calls) == 2 and attacks.groups[0].guided
    attacks.guided_phase(attacks.groups)
    assert len(calls) == 2


def test_groups_after_a_guided_pass_that_did_not_fit_wait_for_the_next_call(monkeypatch):
    """A spec of many output conditions (a robustness spec over 99 classes: 99 groups) runs
    one group's bound pass per call when it does not fit, not one per group."""
    from verifier.spec.types import InputRegion, OutputCondition, Spec

    falsify_module = importlib.import_module("verifier.attack.falsify")
    calls = []

    def no_points(*args, **kwargs):
        calls.append(1)
        return None

    monkeypatch.setattr(falsify_module, "bound_vertices", no_points)
    model, _ = decoy_instance()
    rows = ([[1.0, -1.0, 0.0]], [[1.0, 0.0, -1.0]], [[0.0, 1.0, -1.0]])
    regions = tuple(InputRegion(-np.ones(N), np.ones(N), OutputCondition(
        np.asarray([r], dtype=np.float64), np.zeros((1, 1)))) for r in rows)
    spec = Spec(regions, N, 3)
    attacks = Falsifier(model, spec, AttackConfig(), seed=0)
    attacks.groups = falsify_module.group_regions(spec, "cpu")
    assert len(attacks.groups) == 3
    attacks.stop = time.monotonic() + 0.3
    attacks.guided_phase(attacks.groups)
    assert len(calls) == 1 and not any(g.guided for g in attacks.groups)
    attacks.stop = time.monotonic() + falsify_module.GUIDED_FIRST_MIN_S + 5
    attacks.guided_phase(attacks.groups)
    assert len(calls) == 4 and all(g.guided for g in attacks.groups)
