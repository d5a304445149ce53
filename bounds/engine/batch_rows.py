"""Batches that repeat one row: a search that splits no input gives every domain the region's
box as ``expand``ed views of one row (batch stride 0). Indexing, casting or checking such a
tensor row by row would make or read one copy per domain; these helpers keep it one row."""

from __future__ import annotations

import torch


def repeats_one_row(t: torch.Tensor) -> bool:
    """Whether ``t``'s batch (axis 0, of more than one row) is one row repeated by a zero
    stride."""
    return t.dim() > 0 and t.shape[0] > 1 and t.stride(0) == 0


def one_row(t: torch.Tensor) -> torch.Tensor:
    """``t``'s first row alone ([1, ...]) where its batch repeats one row, else ``t``."""
    return t[:1] if repeats_one_row(t) else t


def pick_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t[rows]`` (``rows``: a bool mask or indices), kept a view of one row where ``t``
    repeats one row."""
    if repeats_one_row(t):
        count = int(rows.sum()) if rows.dtype == torch.bool else rows.numel()
        return t[:1].expand(count, *t.shape[1:])
    return t[rows]


def cast_rows(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``, kept a view of one row where ``t`` repeats one row (``to`` would
    write out every repeat)."""
    if repeats_one_row(t):
        return t[:1].to(dtype).expand(t.shape)
    return t.to(dtype)
