"""The float32 points attacks search: nearest to the real box, inside it where it has some."""

from __future__ import annotations

import numpy as np
import torch

from verifier.attack import TorchCondition
from verifier.attack.blackbox import condition_loss
from verifier.spec.types import OutputCondition
from verifier.validate import (
    attack_float32_box,
    box_tolerance,
    float32_box,
    nearest_float32_box,
)


def _random_bounds(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of every kind: pinned, narrower than a float32 step, ordinary, large."""
    centre = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, size=n)
    width = np.choose(rng.integers(0, 4, size=n),
                      [np.zeros(n), np.abs(centre) * 1e-9, rng.random(n), 1e3 * rng.random(n)])
    return centre, centre + width


def test_nearest_box_is_the_inner_box_or_the_two_neighbours():
    rng = np.random.default_rng(0)
    lower, upper = _random_bounds(rng, 4000)
    lo, hi = nearest_float32_box(lower, upper)
    inner_lo, inner_hi = float32_box(lower, upper)
    has_point = inner_lo <= inner_hi
    assert np.all(lo <= hi)
    assert np.array_equal(lo[has_point], inner_lo[has_point])
    assert np.array_equal(hi[has_point], inner_hi[has_point])
    empty = ~has_point
    assert empty.any() and has_point.any()
    # In an empty coordinate: lo is the float32 just below lower, hi the one just above upper.
    assert np.all(lo[empty].astype(np.float64) < lower[empty])
    assert np.all(hi[empty].astype(np.float64) > upper[empty])
    assert np.array_equal(np.nextafter(lo[empty], np.float32(np.inf)), hi[empty])


def test_attack_box_follows_the_tolerance():
    lower, upper = np.array([0.1, 0.0]), np.array([0.1, 1.0])
    assert np.all(np.less_equal(*attack_float32_box(lower, upper)))
    with box_tolerance(0.0):
        lo, hi = attack_float32_box(lower, upper)
    assert lo[0] > hi[0] and lo[1] <= hi[1]


def test_condition_loss_matches_the_pgd_objective():
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(7, 3, 4))
    rhs = rng.normal(size=(7, 3))
    rhs[2, 1] = np.inf  # a padding row
    cond = OutputCondition(coef, rhs)
    ys = rng.normal(size=(50, 4))
    ours = condition_loss(cond, ys)
    ref = TorchCondition.from_condition(cond, "cpu", torch.float64).loss(torch.as_tensor(ys))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-12, atol=1e-12)
    holds = np.array([cond.holds(y) for y in ys])
    assert holds.any() and not holds.all()
    assert np.array_equal(ours <= 0, holds)
