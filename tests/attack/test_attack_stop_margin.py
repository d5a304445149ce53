"""The run's attacks stop where the bound engines stop (strategy.engine_end), not at the run's
deadline: their pieces check the clock only between them."""

from __future__ import annotations

import time

import verifier.strategy as strategy


class _Recorder:
    def run(self, deadline, budget_s=None):
        self.deadline, self.budget_s = deadline, budget_s


def test_an_attack_ends_before_the_runs_deadline():
    deadline = time.monotonic() + 60.0
    attacks = _Recorder()
    strategy._attack(attacks, deadline, 40.0)
    assert attacks.deadline < deadline - 1.0  # 2% of 60 s, at most ENGINE_MARGIN_MAX_S
    assert attacks.deadline >= deadline - strategy.ENGINE_MARGIN_MAX_S - 1e-6
    assert attacks.budget_s == 40.0
