"""Rows of batches. A search that splits no input gives every domain the region's box as
``expand``ed views of one row (batch stride 0); indexing, casting or checking such a tensor row
by row would make or read one copy per domain: these helpers keep it one row. ``take_rows``
picks rows of any batch by ``index_select``."""

from __future__ import annotations

import torch


def repeats_one_row(t: torch.Tensor) -> bool:
    """Whether ``t``'s batch (axis 0, of more than one row) is one row repeated by a zero
    stride."""
    return t.dim() > 0 and t.shape[0] > 1 and t.stride(0) == 0


def one_row(t: torch.Tensor) -> torch.Tensor:
    """``t``'s first row alone ([1, ...]) where its batch repeats one row, else ``t``."""
    return t[:1] if repeats_one_row(t) else t


def as_indices(rows: torch.Tensor) -> torch.Tensor:
    """A [B] bool mask as the indices it marks (other ``rows`` as they are): for a caller
    that picks the same rows of several tensors."""
    return rows.nonzero().flatten() if rows.dim() == 1 and rows.dtype == torch.bool else rows


def take_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t[rows]`` along axis 0 (``rows``: a [B] bool mask or 1-D non-negative indices) by
    ``index_select``, which copies whole rows: torch's advanced indexing copies element by
    element, several times slower on the searches' batches (one thread, float32: 124 of 62
    rows of [8, 16, 16] 35 vs 270 us, 372 of 700 rows of [2048] 79 vs 581 us)."""
    if rows.dim() != 1:
        return t[rows]
    return t.index_select(0, as_indices(rows))


def pick_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t[rows]`` (``rows``: a bool mask or indices), kept a view of one row where ``t``
    repeats one row."""
    if repeats_one_row(t):
        count = int(rows.sum()) if rows.dtype == torch.bool else rows.numel()
        return t[:1].expand(count, *t.shape[1:])
    return take_rows(t, rows)


def cast_rows(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``, kept a view of one row where ``t`` repeats one row (``to`` would
    write out every repeat)."""
    if repeats_one_row(t):
        return t[:1].to(dtype).expand(t.shape)
    return t.to(dtype)
