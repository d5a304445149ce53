"""Materialise a node's inline numpy constants as torch tensors, once per device and dtype."""

from __future__ import annotations

import numpy as np
import torch

_CACHE: dict[tuple[int, str, torch.dtype], tuple[np.ndarray, torch.Tensor]] = {}


def as_tensor(array: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Float arrays take the engine dtype; integer and bool arrays keep theirs."""
    target = dtype if np.issubdtype(array.dtype, np.floating) else None
    key = (id(array), str(device), target)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is array:
        return hit[1]
    contiguous = np.ascontiguousarray(array)
    if not contiguous.flags.writeable:  # torch warns on read-only buffers (broadcast views)
        contiguous = contiguous.copy()
    tensor = torch.as_tensor(contiguous, device=device)
    if target is not None:
        tensor = tensor.to(target)
    _CACHE[key] = (array, tensor)  # keeping `array` alive keeps its id() unique
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
