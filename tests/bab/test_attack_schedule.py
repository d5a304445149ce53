"""The BaB attack schedule: more attacks when they come close, fewer when they do not."""

from __future__ import annotations

import math

from verifier.bab.attack_schedule import MAX_BUDGET_S, MAX_EVERY_FACTOR, AttackSchedule


def steps_until_due(s: AttackSchedule, elapsed: float = 100.0) -> int:
    for n in range(1, 1000):
        if s.due(elapsed):
            return n
    raise AssertionError("never due")


def test_promising_attacks_come_more_often_with_more_time():
    s = AttackSchedule(8)
    assert steps_until_due(s) == 1  # the first step attacks
    assert steps_until_due(s) == 8
    s.record(loss=0.1, took_s=0.1, margin=-5.0)  # far closer to a violation than to a proof
    assert s.interval == 4 and s.budget_s > 2.0
    for _ in range(10):
        s.record(loss=0.1, took_s=0.1, margin=-5.0)
    assert s.interval == 1 and s.budget_s == MAX_BUDGET_S


def test_hopeless_attacks_back_off_to_a_cap():
    s = AttackSchedule(8)
    s.record(loss=3.0, took_s=0.1, margin=-0.5)  # the bound is nearly a proof
    assert s.interval == 16 and s.budget_s < 2.0
    for _ in range(10):
        s.record(loss=3.0, took_s=0.1, margin=-0.5)
    assert s.interval == MAX_EVERY_FACTOR * 8


def test_progress_alone_counts_as_promise():
    s = AttackSchedule(8)
    s.record(loss=10.0, took_s=0.1, margin=-1.0)
    before = s.interval
    s.record(loss=5.0, took_s=0.1, margin=-1.0)
    assert s.interval == before // 2


def test_attacks_keep_to_their_share_of_the_time():
    s = AttackSchedule(1)
    s.record(loss=math.inf, took_s=10.0, margin=None)
    assert not s.due(elapsed_s=12.0)  # 10 of 12 s already went to attacks
    assert s.due(elapsed_s=25.0)


def test_fixed_schedule_is_the_ablation_baseline():
    s = AttackSchedule(8, adaptive=False)
    s.record(loss=0.0, took_s=100.0, margin=-5.0)
    assert s.interval == 8 and s.budget_s == 2.0
    assert steps_until_due(s, elapsed=1.0) == 1
    assert steps_until_due(s, elapsed=1.0) == 8


def test_a_hopeless_prior_attack_takes_back_the_first_steps_attack():
    s = AttackSchedule(8)
    s.prior(loss=4.7, margin=-0.03)  # the bounds are nearly a proof
    assert steps_until_due(s) == 8
    s = AttackSchedule(8)
    s.prior(loss=0.1, margin=-5.0)  # promising: the first step still attacks
    assert steps_until_due(s) == 1
    s = AttackSchedule(8, adaptive=False)
    s.prior(loss=4.7, margin=-0.03)  # the ablation baseline ignores it
    assert steps_until_due(s) == 1
