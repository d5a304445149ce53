"""How much of a run's time goes to attacks around a complete search: a share that follows
how hopeless the bounds look next to how close the attack came.

After the bound cascade, the true minimum of the spec's violation loss over a region lies in
``[m, L]``: ``m < 0`` is the cascade's worst open margin (how far the bounds are from a proof)
and ``L`` the attack's best IR loss (how far its best point is from a violation). When ``L``
is a small fraction ``rho = L / |m|`` of the gap, the bounds are much further from a proof
than the attack is from a counterexample, and a search whose root bound lies that far below
zero seldom closes within the time (cora_2024 mnist-trades img15: m = -2.3e5, L = 6;
marabou-cifar10 medium 2317 eps 0.012: m = -285, L = 0.2; both sat). The share grows by
``SHARE_PER_DECADE`` for every factor of ten that ``rho`` lies below ``HOPELESS_RATIO``, up to
``MAX_SHARE``; at ``rho >= HOPELESS_RATIO`` the complete search keeps its time. The pipeline
spends the share of the time left on an attack before branch-and-bound and keeps the same
share of what is left after it for a last attack.
"""

from __future__ import annotations

import math

HOPELESS_RATIO = 0.1
SHARE_PER_DECADE = 0.15
MAX_SHARE = 0.5


def attack_share(best_loss: float, margin: float | None) -> float:
    """Share of the time left for attacks around a complete search, in [0, MAX_SHARE], from
    the attack's best IR loss and the bounds' worst open margin (None: not known)."""
    if margin is None or math.isnan(margin) or margin >= 0 or math.isnan(best_loss):
        return 0.0
    if math.isinf(margin) or best_loss <= 0:
        return MAX_SHARE  # bounds with no grip at all, or an IR violation onnxruntime rejected
    if math.isinf(best_loss):
        return 0.0  # the attack evaluated nothing: no evidence either way
    decades = math.log10(HOPELESS_RATIO * -margin / best_loss)
    return min(MAX_SHARE, max(0.0, SHARE_PER_DECADE * decades))
