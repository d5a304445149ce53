"""The neuron-split root can start from intermediate bounds an earlier pass found."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.types import Interval
from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net


@pytest.mark.parametrize("seed", [2, 3])
def test_root_from_given_bounds_proves_what_it_did(seed):
    delta = -0.05
    graph, exact = tiny_net(seed, hidden=(5, 5))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(4), np.ones(4), c)
    region = region_for(exact, 4, c[None, None], [[m + delta]])
    first = make_search(graph, region, attack=False).root()
    given = {k: Interval(first.lower[k], first.upper[k]) for k in first.lower}
    search = make_search(graph, region, attack=False)
    search.root_bounds = given
    root = search.root()
    for k in given:  # kept, not loosened
        assert torch.all(root.lower[k] >= given[k].lower - 1e-12)
        assert torch.all(root.upper[k] <= given[k].upper + 1e-12)
    # a lower bound of c @ y - rhs, whose true minimum over the box is -delta
    assert float(root.bound.min()) <= -delta + 1e-6
    out = search.run()
    assert out.verdict == "unsat", out.stats
