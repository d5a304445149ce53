"""A Relu-only root given bounds (the cascade's) refines them with alpha-CROWN when time
allows (``root_refine``), conv and fully connected nets alike: never looser than given, tighter
where alpha finds better, enclosing sampled values; off: the given bounds as they are."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.types import Interval
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from tests.bounds.test_conv_patches import _conv_1d


def _given(seed: int, conv: bool = True):
    graph = _conv_1d(seed) if conv else tiny_net(seed, n_in=4, hidden=(8, 8, 8))[0]
    n_in = math.prod(graph.inputs[0].shape)
    n_out = math.prod(graph.outputs[0].shape)
    coef = np.zeros((1, 1, n_out))
    coef[0, 0, :2] = (1.0, -1.0)
    region = region_for(None, n_in, coef, [[100.0]])
    plain = make_search(graph, region, attack=False, narrow_dead=False,
                        root_alpha_iterations=0).root()  # plain CROWN intermediates
    return graph, region, {k: Interval(plain.lower[k], plain.upper[k]) for k in plain.lower}


@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_refined_root_bounds_are_inside_given_and_enclose_samples(seed, conv):
    graph, region, given = _given(seed, conv)
    search = make_search(graph, region, attack=False, narrow_dead=False)
    search.root_bounds = given
    root = search.root()
    tighter = 0.0
    shape = graph.inputs[0].shape
    x = torch.rand(4000, *shape, dtype=torch.float64) * 2 - 1
    values = {k: v.flatten(1) for k, v in run_graph(graph, x, keep_all=True).items()}
    for k, b in given.items():
        assert bool((root.lower[k] >= b.lower).all()) and bool((root.upper[k] <= b.upper).all())
        tighter += float((root.lower[k] - b.lower).sum() + (b.upper - root.upper[k]).sum())
        assert bool((values[k] >= root.lower[k].reshape(-1) - 1e-9).all())
        assert bool((values[k] <= root.upper[k].reshape(-1) + 1e-9).all())
    assert tighter > 0  # alpha-CROWN improved on plain CROWN somewhere (fails when skipped)


@pytest.mark.parametrize("conv", [True, False])
def test_root_refine_off_keeps_given_bounds(conv):
    graph, region, given = _given(4, conv)
    search = make_search(graph, region, attack=False, narrow_dead=False, root_refine=False)
    search.root_bounds = given
    root = search.root()
    for k, b in given.items():
        assert torch.equal(root.lower[k], b.lower) and torch.equal(root.upper[k], b.upper)


def _counting_fresh_passes(search) -> list:
    """Calls of the search's intermediate-bound passes that reuse nothing (the pricing pass;
    the root's own bound reuses the layer bounds)."""
    passes, run = [], search._intermediates

    def counted(dom, reuse, *args, **kwargs):
        passes.append(reuse)
        return run(dom, reuse, *args, **kwargs)

    search._intermediates = counted
    return passes


def test_root_priced_out_by_the_cascades_crown_pass_runs_no_pass():
    """Where the cascade's CROWN pass says that ROOT_ALPHA_MIN alpha iterations cannot fit,
    the root keeps the given bounds without a pricing pass of its own (13.8 s of a 60 s run
    on a CIFAR-100-size ResNet); with a cheap cascade pass it prices and refines as before."""
    graph, region, given = _given(4)
    for crown_s, prices in ((1e6, False), (1e-6, True)):
        search = make_search(graph, region, attack=False, narrow_dead=False,
                             root_crown_s=crown_s)
        search.root_bounds = given
        passes = _counting_fresh_passes(search)
        root = search.root()
        assert (False in passes) == prices
        if not prices:
            for k, b in given.items():
                assert torch.equal(root.lower[k], b.lower) and torch.equal(root.upper[k], b.upper)
