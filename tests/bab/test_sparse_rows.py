"""sparse_rows.pack / unpack: exact round trips of mostly-zero per-domain tensors."""

from __future__ import annotations

import torch

from verifier.bab import sparse_rows


def test_round_trip_is_exact_for_any_pattern():
    gen = torch.Generator().manual_seed(0)
    for density in (0.0, 0.01, 0.3, 1.0):
        dense = torch.randn(7, 3, 4, 6, generator=gen)
        dense = torch.where(torch.rand(7, 1, 4, 6, generator=gen) < density, dense, 0.0)
        dense[0] = 0.0  # a domain with no nonzero at all
        values, index = sparse_rows.pack(dense)
        assert index.shape[1] == int((dense.reshape(7, 3, -1) != 0).any(1).sum(1).max())
        assert torch.equal(sparse_rows.unpack(values, index, (4, 6)), dense)
        wide_v, wide_i = sparse_rows.pad_to(values, index, index.shape[1] + 5)
        assert torch.equal(sparse_rows.unpack(wide_v, wide_i, (4, 6)), dense)


def test_a_value_at_position_zero_survives_the_padding():
    dense = torch.zeros(2, 1, 5)
    dense[0, 0, 0] = 3.0
    dense[1, 0, 1], dense[1, 0, 4] = 1.0, 2.0
    values, index = sparse_rows.pack(dense)
    assert index.tolist() == [[0, -1], [1, 4]]
    assert torch.equal(sparse_rows.unpack(values, index, (5,)), dense)
