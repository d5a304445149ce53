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
