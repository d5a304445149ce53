"""Batched bounds of many input regions (verifier/bab/region_batch.py): the same verdicts as
one pass per region, sound on samples, and no batch started past the deadline."""

from __future__ import annotations

import time

import numpy as np
import torch

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp
from verifier.bab.problem import RegionProblem
from verifier.bab.region_batch import refute_in_batches
from verifier.spec.types import InputRegion, OutputCondition

F64 = torch.float64


def _problems(n: int, seed: int = 0) -> list[RegionProblem]:
    """n small boxes along a line, each with 'y0 - y1 <= t' (t varies: some hold, some not)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        centre = rng.uniform(-1, 1, 3)
        cond = OutputCondition(np.array([[[1.0, -1.0]]]), np.array([[rng.uniform(-2, 2)]]))
        region = InputRegion(centre - 0.05, centre + 0.05, cond)
        out.append(RegionProblem.from_region(i, region, "cpu", F64))
    return out


def _alone(graph, p: RegionProblem) -> bool:
    shape = graph.inputs[0].shape
    box = Interval(p.lower.reshape(1, *shape), p.upper.reshape(1, *shape))
    res = bound_spec(graph, box, p.coef.unsqueeze(0), p.rhs.unsqueeze(0),
                     BoundOptions(method="crown", intermediate="crown"))
    return bool(p.refuted_disjuncts(res.lower).all())


def test_batches_agree_with_one_pass_per_region_and_are_sound(monkeypatch):
    import verifier.bab.region_batch as region_batch

    graph = random_mlp([3, 16, 16, 2], seed=2)
    problems = _problems(40)
    monkeypatch.setattr(region_batch, "MAX_BATCH", 7)  # several batches, one partial
    unstable: dict[int, int] = {}
    refuted = refute_in_batches(graph, problems, time.monotonic() + 60, unstable)
    assert refuted == {p.index for p in problems if _alone(graph, p)}
    assert 0 < len(refuted) < len(problems)  # the case mix tests both answers
    assert set(unstable) == {p.index for p in problems}
    gen = torch.Generator().manual_seed(0)
    for p in problems:
        if p.index in refuted:
            x = p.lower + (p.upper - p.lower) * torch.rand((500, 3), dtype=F64, generator=gen)
            (y,) = run_graph(graph, x.reshape(500, *graph.inputs[0].shape))
            y = y.reshape(500, -1)
            assert not bool(p.violated(y).any())


def test_few_regions_or_a_past_deadline_start_no_batch(monkeypatch):
    import verifier.bab.region_batch as region_batch

    graph = random_mlp([3, 16, 16, 2], seed=2)
    calls = {"n": 0}
    monkeypatch.setattr(region_batch, "_refuted",
                        lambda *a: calls.__setitem__("n", calls["n"] + 1))
    assert refute_in_batches(graph, _problems(3), time.monotonic() + 60) == set()
    assert refute_in_batches(graph, _problems(40), time.monotonic() - 1) == set()
    assert calls["n"] == 0
