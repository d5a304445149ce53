"""``batch_rows``: a batch that repeats one row by a zero stride (the region box of every
domain) stays one row through indexing, casting and ``Intermediates.select``, with the values
of the written-out copies; other tensors are indexed and cast as usual."""

from __future__ import annotations

import torch

from bounds.engine.batch_rows import (
    as_indices,
    cast_rows,
    one_row,
    pick_rows,
    repeats_one_row,
    take_rows,
)
from bounds.engine.results import Intermediates
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


def _repeated(n=5):
    row = torch.arange(6, dtype=F64).reshape(1, 2, 3) / 7
    return row.expand(n, 2, 3), row.repeat(n, 1, 1)


def test_repeated_rows_are_recognised_and_kept_one_row():
    shared, copied = _repeated()
    assert repeats_one_row(shared) and not repeats_one_row(copied)
    assert not repeats_one_row(shared[:1]) and not repeats_one_row(torch.tensor(1.0))
    assert one_row(shared).shape == (1, 2, 3) and one_row(copied) is copied
    rows = torch.tensor([True, False, True, True, False])
    picked = pick_rows(shared, rows)
    assert picked.shape == (3, 2, 3) and picked.stride(0) == 0
    assert torch.equal(picked, copied[rows])
    index = torch.tensor([4, 0, 0, 2, 1, 3])
    assert torch.equal(pick_rows(shared, index), copied[index])
    assert torch.equal(pick_rows(copied, index), copied[index])


def test_casts_keep_the_repeat_and_round_as_to():
    shared, copied = _repeated()
    cast = cast_rows(shared, torch.float32)
    assert cast.dtype == torch.float32 and cast.stride(0) == 0
    assert torch.equal(cast, copied.to(torch.float32))
    assert torch.equal(cast_rows(copied, torch.float32), copied.to(torch.float32))


def test_select_keeps_a_repeated_box_and_picks_the_rest():
    shared, copied = _repeated(4)
    bounds = {"v": Interval(torch.arange(4, dtype=F64).reshape(4, 1),
                            torch.arange(4, dtype=F64).reshape(4, 1) + 1)}
    inter = Intermediates(random_mlp([6, 1]), Interval(shared, shared + 1), bounds)
    picked = inter.select(torch.tensor([3, 3, 0]))
    assert picked.box.lower.stride(0) == 0 and picked.box.lower.shape == (3, 2, 3)
    assert torch.equal(picked.box.upper, copied[[3, 3, 0]] + 1)
    assert picked.bounds["v"].lower.flatten().tolist() == [3.0, 3.0, 0.0]
    by_mask = inter.select(torch.tensor([False, True, True, False]))
    assert by_mask.box.lower.shape == (2, 2, 3)
    assert by_mask.bounds["v"].upper.flatten().tolist() == [2.0, 3.0]


def test_take_rows_equals_indexing():
    """By mask, by indices (repeats, any order) and on non-contiguous batches, with the
    gradient of indexing; other index shapes fall back to indexing."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn((6, 3, 4, 5), generator=g)
    mask = torch.tensor([True, False, True, True, False, True])
    idx = torch.tensor([5, 0, 0, 3])
    for t in (base, base.to(F64), base.transpose(1, 3), base[::1, :, 1:3],
              base.contiguous(memory_format=torch.channels_last)):
        for rows in (mask, idx, as_indices(mask), torch.zeros(0, dtype=torch.long)):
            got = take_rows(t, rows)
            assert torch.equal(got, t[rows]) and got.dtype == t.dtype
    assert torch.equal(as_indices(mask), torch.tensor([0, 2, 3, 5])) and as_indices(idx) is idx
    two_d = torch.tensor([[1, 2], [0, 0]])
    assert torch.equal(take_rows(base, two_d), base[two_d])
    leaf = base.clone().requires_grad_()
    (take_rows(leaf, idx) * 2).sum().backward()
    expected = torch.zeros_like(base)
    expected.index_put_((idx,), torch.full_like(base[idx], 2.0), accumulate=True)
    assert torch.equal(leaf.grad, expected)
