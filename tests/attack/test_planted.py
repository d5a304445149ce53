"""Falsification that does not depend on luck: violations planted in a thin pocket at (or
beside) a box vertex (tests/attack/planted.py) that PGD from random starts walks away from."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.attack.planted import mlp_value, planted_instance
from verifier.attack import attack_boxes
from verifier.attack.falsify import falsify
from verifier.attack.guided import bound_vertices
from verifier.attack.pgd import float32_boxes
from verifier.bab.region_attack import RegionAttack
from verifier.config import AttackConfig
from verifier.validate import run_onnx


@pytest.mark.parametrize("off_vertex", [False, True])
def test_fixture_plants_a_thin_pocket(off_vertex):
    p = planted_instance(24, seed=1, off_vertex=off_vertex)
    region = p.spec.regions[0]
    assert region.contains(p.witness) and region.contains(p.vertex)
    assert mlp_value(p.layers, p.witness[None])[0, 0] < 0
    assert run_onnx(p.model, p.witness[None].astype(np.float32))[0] < 0
    assert (mlp_value(p.layers, p.vertex[None])[0, 0] > 0) == off_vertex
    rng = np.random.default_rng(0)
    x = region.lower + rng.random((20000, 24)) * (region.upper - region.lower)
    assert (mlp_value(p.layers, x) >= 1.0 - 1e-9).all()  # y >= 1 away from the pocket


def test_random_start_pgd_misses_the_pocket():
    """The fixture is hard for PGD: 256 random and face starts, 50 steps, a fixed seed."""
    p = planted_instance(24, seed=1)
    region = p.spec.regions[0]
    gen = torch.Generator().manual_seed(0)
    res = attack_boxes(p.model.graph, region.lower[None], region.upper[None],
                       region.condition, steps=50, restarts=256, generator=gen)
    assert float(res.loss.min()) > 0


def test_bound_vertices_point_to_the_planted_vertex():
    p = planted_instance(24, seed=2)
    region = p.spec.regions[0]
    lo, hi = float32_boxes(region.lower[None], region.upper[None], "cpu")
    got = bound_vertices(p.model.graph, lo, hi, region.condition, time.monotonic() + 30, 8)
    assert got is not None
    x, box = got
    assert int(box[0]) == 0
    np.testing.assert_allclose(x[0].double().numpy(), p.vertex, rtol=0, atol=1e-6)


@pytest.mark.parametrize("off_vertex", [False, True])
def test_guided_falsify_finds_the_pocket(off_vertex):
    p = planted_instance(24, seed=3, off_vertex=off_vertex)
    start = time.monotonic()
    cex = falsify(p.model, p.spec, start + 20, AttackConfig(time_share=1.0), budget_s=20)
    assert cex is not None
    assert p.spec.regions[0].condition.holds(cex.y)


def test_region_attack_from_seeds_finds_what_random_starts_miss():
    """Started at the planted vertex (what the BaB's bounds give), a fine PGD run steps into
    the pocket beside it; the same attack without seeds does not."""
    p = planted_instance(24, seed=4, off_vertex=True)
    region = p.spec.regions[0]
    seeds = torch.as_tensor(p.vertex[None], dtype=torch.float64)
    unseeded = RegionAttack(p.model.graph, region, 50, 64, "cpu")
    assert unseeded(0, time.monotonic() + 60) is None and unseeded.last_loss > 0
    seeded = RegionAttack(p.model.graph, region, 50, 64, "cpu")
    x = seeded(0, time.monotonic() + 60, starts=seeds)
    assert x is not None and seeded.last_loss <= 0
    assert mlp_value(p.layers, x.double().numpy())[:, 0].min() < 0
