"""Children's intermediate bounds taken from their parents' (``child_intermediates``): the
split layers' intervals are the children's own, every other value's interval contains what a
pass over the network gives the child (a child's region lies inside its parent's), and points
sampled in a child's region lie inside them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from verifier.bab.neuron_domains import child_intermediates, split_domains, split_more


def _children(seed: int, more: bool):
    graph, _ = tiny_net(seed, n_in=4, hidden=(6, 6, 6))
    region = region_for(None, 4, np.array([[[1.0, -1.0, 0.0]]]), [[100.0]])
    search = make_search(graph, region, attack=False, narrow_dead=False)
    root = search.root()  # parents: the root's children, bounded (bounds of their own)
    parents = search.bound(split_domains(root, search.layers, root.candidates[:, 0]), 5, True)
    assert len(parents) == 2
    if more:
        kids, _ = split_more(parents, search.layers, parents.candidates[:, 0], None, 2, 64)
    else:
        kids = split_domains(parents, search.layers, parents.candidates[:, 0])
    return graph, search, parents, kids


@pytest.mark.parametrize(("seed", "more"), [(1, False), (2, True), (3, True)])
def test_children_bounds_from_parents_enclose_a_fresh_pass(seed, more):
    graph, search, parents, kids = _children(seed, more)
    from_parents = child_intermediates(search._intermediates(parents, True)[0], kids)
    fresh = search._intermediates(kids, True)[0]
    assert not bool(from_parents.infeasible.any())
    for lay in search.layers:
        got = from_parents.bounds[lay.value]
        assert torch.equal(got.lower, kids.lower[lay.value])
        assert torch.equal(got.upper, kids.upper[lay.value])
    for name, want in fresh.bounds.items():
        got = from_parents.bounds[name]
        # (up to the float64 rounding of passes over batches of other sizes, whose products
        # may sum in another order: an ulp or two where a child's bound equals its parent's,
        # seen on an AVX-512 machine; the engines' final margin covers it)
        ulps = 1e-14 * (1 + want.lower.abs() + want.upper.abs())
        assert bool((got.lower <= want.lower + ulps).all())
        assert bool((got.upper >= want.upper - ulps).all())
    # points of each child's region (its Relu phases) lie inside its bounds of every value
    x = torch.rand(4000, 4, dtype=torch.float64) * 2 - 1
    values = {k: v.flatten(1) for k, v in run_graph(graph, x, keep_all=True).items()}
    sampled = 0
    for i in range(len(kids)):
        phase = torch.ones(len(x), dtype=torch.bool)
        for lay in search.layers:
            z, code = values[lay.value], kids.splits[lay.value][i].reshape(-1)
            phase &= ((code == 0) | ((code > 0) & (z >= 0)) | ((code < 0) & (z <= 0))).all(1)
        sampled += int(phase.any())
        for name, b in from_parents.bounds.items():
            z = values[name][phase]
            assert bool((z >= b.lower[i].reshape(-1) - 1e-9).all())
            assert bool((z <= b.upper[i].reshape(-1) + 1e-9).all())
    assert sampled >= len(kids) // 2  # (a child may hold no sample: a thin or empty region)
