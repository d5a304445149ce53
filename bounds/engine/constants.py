"""Materialise a node's inline numpy constants as torch tensors, once per device and dtype.

The cache holds a converted tensor only while its numpy array lives: entries are keyed by the
array's ``id`` and dropped by a weak-reference callback when the array is freed, so a worker that
verifies many models keeps the constants of the graphs still in use, not of every graph it saw.
A tensor that shares the array's memory (CPU, same dtype) is not cached: it would keep the array
alive, and making it again costs nothing.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

# id(array) -> (weak reference to the array, {(device, dtype): tensor})
_CACHE: dict[int, tuple[weakref.ref, dict[tuple[str, torch.dtype | None], torch.Tensor]]] = {}


def cache_size() -> int:
    """Arrays with converted tensors in the cache (for tests and diagnostics)."""
    return len(_CACHE)


def _drop(key: int, ref: weakref.ref, table: dict | None = None) -> None:
    table = _CACHE if table is None else table
    entry = table.get(key)
    if entry is not None and entry[0] is ref:  # not a newer array that reuses the id
        del table[key]


def array_memo(table: dict, array, compute):
    """``compute(array)``, remembered in ``table`` (id -> (weak reference, value)) while the
    array lives, like the tensors above; an array that cannot be weakly referenced is
    computed each time. (Per-array facts read on every bound pass: a weight's largest
    magnitude, whether it has zeros.)"""
    key = id(array)
    entry = table.get(key)
    if entry is not None and entry[0]() is array:
        return entry[1]
    value = compute(array)
    try:
        ref = weakref.ref(array, lambda r, key=key: _drop(key, r, table))
    except TypeError:
        return value
    table[key] = (ref, value)
    return value


def _slot(array: np.ndarray) -> dict | None:
    """The array's tensors by (device, dtype); None when it cannot be weakly referenced."""
    key = id(array)
    entry = _CACHE.get(key)
    if entry is not None and entry[0]() is array:
        return entry[1]
    try:
        ref = weakref.ref(array, lambda r, key=key: _drop(key, r))
    except TypeError:  # numpy scalars
        return None
    _CACHE[key] = (ref, {})
    return _CACHE[key][1]


def _convert(array: np.ndarray, device: torch.device | str, target: torch.dtype | None
             ) -> tuple[torch.Tensor, bool]:
    """(tensor, whether it shares the array's memory)."""
    contiguous = np.ascontiguousarray(array)
    if not contiguous.flags.writeable:  # torch warns on read-only buffers (broadcast views)
        contiguous = contiguous.copy()
    tensor = torch.as_tensor(contiguous, device=device)
    if target is not None:
        tensor = tensor.to(target)
    shares = (tensor.device.type == "cpu" and tensor.numel() > 0
              and tensor.data_ptr() == contiguous.__array_interface__["data"][0]
              and np.may_share_memory(contiguous, array))
    return tensor, shares


def as_tensor(array: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Float arrays take the engine dtype; integer and bool arrays keep theirs."""
    target = dtype if np.issubdtype(array.dtype, np.floating) else None
    slot = _slot(array)
    key = (str(device), target)
    if slot is not None and key in slot:
        return slot[key]
    tensor, shares = _convert(array, device, target)
    if slot is not None and not shares:
        slot[key] = tensor
    return tensor


def node_args(node, values: dict, device, dtype) -> list:
    """The argument list of a node: dynamic values from ``values``, constants materialised."""
    args = []
    for pos, name in enumerate(node.inputs):
        if name is None:
            const = node.consts.get(pos)
            args.append(None if const is None else as_tensor(const, device, dtype))
        else:
            args.append(values[name])
    return args
