"""Input splitting's children inherit their parent's linear bounds only when one batch's
records fit the memory budget (a record is [domains, positions, input size] per refined
value: cctsdb's patch-1, 12296 inputs, asked for a 2.4 GB record of one cell). The answers
stay exact either way."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bab.exact import exact_min
from tests.bab.test_input_split import make_search
from tests.bab.test_neuron_split import region_for, tiny_net


def _problem(seed: int, delta: float):
    graph, exact = tiny_net(seed, n_in=3, hidden=(5, 4))
    c = np.array([1.0, -1.0, 0.0])
    m = exact_min(exact, -np.ones(3), np.ones(3), c)
    return graph, region_for(exact, 3, c[None, None], [[m + delta]])


def _recorded(search) -> list[bool]:
    calls, real = [], search.bound

    def spy(dom, record_linear=False):
        calls.append(record_linear)
        return real(dom, record_linear=record_linear)

    search.bound = spy
    return calls


@pytest.mark.parametrize("delta", [-0.05, 0.05])
def test_records_only_within_the_budget_and_answers_stay_exact(delta):
    graph, region = _problem(3, delta)
    want = "sat" if delta > 0 else "unsat"
    roomy = make_search(graph, region)
    roomy_calls = _recorded(roomy)
    assert roomy.run().verdict == want
    assert roomy_calls and all(roomy_calls)  # (the small budget below is what turns it off)
    tight = make_search(graph, region, inherit_max_bytes=1000)
    tight_calls = _recorded(tight)
    assert tight.run().verdict == want
    assert tight_calls and not any(tight_calls)
