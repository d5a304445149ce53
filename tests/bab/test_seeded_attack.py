"""Neuron-split BaB finds a violation planted beside a box vertex through its seeded attacks."""

from __future__ import annotations

from tests.attack.planted import mlp_value, planted_instance
from tests.bab.test_neuron_split import make_search


def test_bab_finds_the_planted_pocket_from_its_bounds():
    p = planted_instance(24, seed=5, off_vertex=True)
    search = make_search(p.model.graph, p.spec.regions[0], deadline_s=60.0)
    out = search.run()
    assert out.verdict == "sat", out.stats
    x = out.counterexample.double().numpy()[None]
    assert mlp_value(p.layers, x)[0, 0] < 0
    assert search.seeds is not None  # the attack had the bounds' vertices to start from
