"""Pairs that cannot be proved within a step's iterations leave the pair loop early
(``drop_hopeless``): their bounds stay sound (below the sub-domains' exact minima), and a
batch of such pairs stops after HOPELESS_SPAN passes instead of running every iteration."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bab.exact import exact_min
from tests.bab.test_neuron_split import make_search, region_for, tiny_net
from verifier.bab import pair_loop
from verifier.bab.neuron_domains import split_domains


@pytest.mark.parametrize(("seed", "drop"), [(42, True), (43, True), (42, False)])
def test_hopeless_pairs_stop_early_and_stay_sound(seed, drop, monkeypatch):
    graph, exact = tiny_net(seed, hidden=(5, 4))
    rows = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    lo, hi = -np.ones(4), np.ones(4)
    mins = [exact_min(exact, lo, hi, r) for r in rows]
    # both disjuncts hold somewhere (rhs above the minimum): no bound can refute them
    rhs = np.array([[mins[0] + 1.0], [mins[1] + 1.0]])
    region = region_for(exact, 4, rows[:, None, :], rhs)
    # (lazy_certify off: every pair's bound gets the certifying pass counted below)
    search = make_search(graph, region, attack=False, narrow_dead=False, drop_hopeless=drop,
                         lazy_certify=False)
    assert not search._drops_hopeless()  # fully connected: off unless forced, as here
    search._drops_hopeless = lambda: drop
    root = search.root()
    kids = split_domains(root, search.layers, root.candidates[:, 0])
    calls = []

    def counting(real):
        def counted(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)
        return counted

    # the loop's passes: the engine's, or on a Linear/Relu chain ``chain_guide``'s
    monkeypatch.setattr(pair_loop, "split_bound", counting(pair_loop.split_bound))
    monkeypatch.setattr(pair_loop, "chain_bound", counting(pair_loop.chain_bound))
    out = search.bound(kids, 20, reuse=True, hopeless=True)
    # the loop's passes and the certifying one: every iteration without dropping
    if drop:
        assert pair_loop.HOPELESS_SPAN + 1 <= len(calls) <= 10
    else:
        assert len(calls) == 21
    for i in range(len(out)):
        fixed = [out.splits[lay.value][i].reshape(-1).numpy() for lay in search.layers]
        for j, row in enumerate(rows):
            m = exact_min(exact, lo, hi, row, fixed)
            assert float(out.bound[i, j]) + rhs[j, 0] <= m + 1e-6
