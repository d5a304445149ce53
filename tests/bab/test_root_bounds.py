"""The neuron-split root can start from intermediate bounds an earlier pass found."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.types import Interval
from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net


@pytest.mark.parametrize("seed", [2, 3, 1])  # 1: the root narrows the net (dead Relus)
def test_root_from_given_bounds_proves_what_it_did(seed):
    delta = -0.05
    graph, exact = tiny_net(seed, hidden=(5, 5))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(4), np.ones(4), c)
    region = region_for(exact, 4, c[None, None], [[m + delta]])
    first = make_search(graph, region, attack=False, narrow_dead=False).root()
    given = {k: Interval(first.lower[k], first.upper[k]) for k in first.lower}
    search = make_search(graph, region, attack=False)
    search.root_bounds = given
    root = search.root()
    red = search.reduction
    assert (red is not None) == (seed == 1)
    for k in given:  # kept, not loosened (on the Relus the search kept)
        lo, up = (given[k].lower, given[k].upper) if red is None else (
            red.take(k, given[k].lower, 1), red.take(k, given[k].upper, 1))
        assert torch.all(root.lower[k] >= lo - 1e-12)
        assert torch.all(root.upper[k] <= up + 1e-12)
    # a lower bound of c @ y - rhs, whose true minimum over the box is -delta
    assert float(root.bound.min()) <= -delta + 1e-6
    out = search.run()
    assert out.verdict == "unsat", out.stats


@pytest.mark.parametrize("work_float32", [True, False])
def test_root_alpha_iterates_in_the_work_dtype_and_encloses_samples(work_float32, monkeypatch):
    """The root's alpha-CROWN over the intermediate values iterates in float32 on Relu nets
    (``work_float32``; the bounds stay the float64 pass's) and its bounds enclose the values
    at sampled inputs."""
    import verifier.bab.neuron_split as ns
    from bounds.engine.forward import run_graph

    graph, exact = tiny_net(5, hidden=(6, 6))
    c = np.array([1.0, -1.0, 0.0])
    region = region_for(exact, 4, c[None, None], [[100.0]])
    seen, real = [], ns.compute_intermediate

    def spy(*args, **kwargs):
        if kwargs.get("alpha_iterations", 0) > 0:
            seen.append(kwargs.get("work_dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ns, "compute_intermediate", spy)
    search = make_search(graph, region, attack=False, narrow_dead=False,
                         work_float32=work_float32)
    root = search.root()
    assert seen and set(seen) == {torch.float32 if work_float32 else None}
    x = torch.rand(2000, 4, dtype=torch.float64) * 2 - 1
    values = run_graph(graph, x.reshape(2000, *graph.inputs[0].shape), keep_all=True)
    for k in root.lower:
        v = values[k].reshape(2000, -1)
        assert bool((v >= root.lower[k].reshape(1, -1) - 1e-9).all())
        assert bool((v <= root.upper[k].reshape(1, -1) + 1e-9).all())
