"""alpha-beta over open (domain, row) pairs (verifier/bab/pair_loop.py) against the row-batched
loop: the same bounds on the open pairs, never above the exact minimum of a sub-domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from verifier.bab.neuron_domains import split_domains


# seed 40 (40-56 s on a loaded machine) runs in the slow suite, which CI runs too
@pytest.mark.parametrize("seed", [pytest.param(40, marks=pytest.mark.slow), 41])
def test_pairs_bound_open_rows_as_rows_do_and_stay_sound(seed):
    graph, exact = tiny_net(seed, hidden=(5, 5))
    rows = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [1.0, 0.0, -1.0]])
    lo, hi = -np.ones(4), np.ones(4)
    mins = [exact_min(exact, lo, hi, r) for r in rows]
    # three one-row disjuncts: one refuted at once, two open near their minimum
    rhs = np.array([[mins[0] - 5.0], [mins[1] + 0.3], [mins[2] + 0.3]])
    region = region_for(exact, 4, rows[:, None, :], rhs)
    out = {}
    for pairs in (True, False):
        search = make_search(graph, region, attack=False, pair_batches=pairs, narrow_dead=False,
                             drop_hopeless=False,  # (the same iterations as rows get)
                             lazy_certify=False)  # (every open pair's bound certified)
        root = search.root()
        kids = split_domains(root, search.layers, root.candidates[:, 0])
        search.counters.done = 0
        out[pairs] = search.bound(kids, 20, reuse=True)
        for i in range(len(out[pairs])):
            fixed = [out[pairs].splits[lay.value][i].reshape(-1).numpy()
                     for lay in search.layers]
            for j, row in enumerate(rows):
                if out[pairs].refuted[i, j]:
                    continue
                m = exact_min(exact, lo, hi, row, fixed)
                assert float(out[pairs].bound[i, j]) + rhs[j, 0] <= m + 1e-6
    a, b = out[True], out[False]
    assert torch.equal(a.refuted, b.refuted)
    open_rows = ~a.refuted
    assert torch.allclose(a.bound[open_rows], b.bound[open_rows], atol=1e-4, rtol=1e-4)
