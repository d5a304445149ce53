"""The sorting network behind TopK (``converters/sorting.py``): by the 0-1 principle a
comparator network sorts every input iff it sorts every 0/1 vector, checked exhaustively up
to n = 12; the top-k cut keeps the first k outputs; sizes stay Batcher's."""

from __future__ import annotations

import itertools

import pytest

from verifier.onnx_import.converters.sorting import merge_sort_network, top_network


def _run(network, values) -> list:
    values = list(values)
    for layer in network:
        touched = [i for pair in layer for i in pair]
        assert len(touched) == len(set(touched)), "a layer's comparators must be disjoint"
        for a, b in layer:
            assert a < b
            if values[a] < values[b]:
                values[a], values[b] = values[b], values[a]
    return values


@pytest.mark.parametrize("n", range(1, 13))
def test_network_sorts_every_zero_one_vector(n):
    network = merge_sort_network(n)
    for bits in itertools.product((0, 1), repeat=n):
        assert _run(network, bits) == sorted(bits, reverse=True)


@pytest.mark.parametrize("n,k", [(5, 1), (7, 3), (9, 2), (12, 5), (8, 8)])
def test_top_k_cut_keeps_the_first_k(n, k):
    cut = top_network(n, k)
    assert sum(map(len, cut)) <= sum(map(len, merge_sort_network(n)))
    for bits in itertools.product((0, 1), repeat=n):
        assert _run(cut, bits)[:k] == sorted(bits, reverse=True)[:k]


def test_layers_grow_like_log_squared():
    """log2(n) (log2(n) + 1) / 2 layers: 55 for 1000 values (a sort of n^2 / 2 pairs would
    not import)."""
    assert len(merge_sort_network(1000)) == 55 and len(merge_sort_network(1)) == 0
