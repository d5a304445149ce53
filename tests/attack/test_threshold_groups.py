"""Regions whose conditions differ only in their thresholds share one attack group: one
``TorchCondition`` with a threshold per region (``at``), losses equal to each region's own."""

from __future__ import annotations

import time

import numpy as np
import torch
from conftest import mlp_model

from verifier.attack import TorchCondition, falsify
from verifier.attack.falsify import group_regions
from verifier.config import AttackConfig
from verifier.spec.types import InputRegion, OutputCondition, Spec


def _cond(coef, rhs) -> OutputCondition:
    return OutputCondition(np.asarray(coef, dtype=np.float64), np.asarray(rhs, dtype=np.float64))


def test_each_sample_is_judged_by_its_own_region_thresholds():
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(3, 2, 4))
    conds = [_cond(coef, rng.normal(size=(3, 2))) for _ in range(5)]
    for c in conds:
        c.rhs[1, 1] = np.inf  # the same padding row in every region
    shared = TorchCondition.from_conditions(conds, "cpu", torch.float64)
    assert shared.per_region and shared.n_disjuncts == 3
    y = torch.as_tensor(rng.normal(size=(40, 4)))
    box = torch.as_tensor(rng.integers(0, 5, size=40))
    got = shared.at(box).loss(y)
    want = torch.stack([TorchCondition.from_condition(conds[int(b)], "cpu", torch.float64)
                        .loss(y[i:i + 1])[0] for i, b in enumerate(box)])
    assert torch.allclose(got, want)
    assert torch.allclose(shared.at(box).rows(10, 25).loss(y[10:25]), want[10:25])
    target = torch.as_tensor(rng.integers(-1, 3, size=40))
    want_t = torch.stack([TorchCondition.from_condition(conds[int(b)], "cpu", torch.float64)
                          .loss(y[i:i + 1], target=target[i:i + 1])[0]
                          for i, b in enumerate(box)])
    assert torch.allclose(shared.at(box).loss(y, target=target), want_t)


def test_regions_group_by_condition_up_to_thresholds():
    coef = [[[1.0, 0.0]]]
    other = [[[0.0, 1.0]]]
    box = (np.zeros(2), np.ones(2))
    regions = [InputRegion(*box, _cond(coef, [[t]])) for t in (0.1, 0.2, 0.3)]
    regions += [InputRegion(*box, _cond(other, [[t]])) for t in (0.1, 0.5)]
    regions += [InputRegion(*box, _cond(coef, [[np.inf]]))]  # another padding pattern
    groups = group_regions(Spec(tuple(regions), 2, 2), "cpu")
    assert sorted(len(g.regions) for g in groups) == [1, 2, 3]
    three = next(g for g in groups if len(g.regions) == 3)
    assert three.tcond.per_region
    assert three.tcond.rhs.flatten().tolist() == [np.float32(t) for t in (0.1, 0.2, 0.3)]
    one = [InputRegion(*box, _cond(coef, [[0.1]])) for _ in range(3)]
    (same,) = group_regions(Spec(tuple(one), 2, 2), "cpu")
    assert not same.tcond.per_region  # equal thresholds: one shared condition as before


def test_finds_the_one_violated_region_among_many_thresholds():
    """1-D input cut into 400 slices, each with its own output bound just outside the
    network's range on the slice but one: the violation is found and validated."""
    w1 = np.array([[1.0], [-1.0]])
    model = mlp_model([(w1, np.zeros(2)), (np.array([[1.0, 1.0]]), np.zeros(1))])  # |x|
    edges = np.linspace(-1.0, 1.0, 401)
    regions = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        top = max(abs(a), abs(b))
        bound = top - 1e-3 if i == 123 else top + 0.05  # unsafe: y >= bound
        regions.append(InputRegion(np.array([a]), np.array([b]), _cond([[[-1.0]]], [[-bound]])))
    spec = Spec(tuple(regions), 1, 1)
    assert len(group_regions(spec, "cpu")) == 1
    config = AttackConfig(restarts=2, steps=10, random_samples=4, time_share=1.0)
    cex = falsify(model, spec, time.monotonic() + 60, config, budget_s=20.0)
    assert cex is not None and spec.violated_by(cex.x, cex.y)
    assert edges[123] <= cex.x[0] <= edges[124]
