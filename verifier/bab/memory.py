"""How much memory a search may hold: a fixed budget, capped by what the device has free.

"Free" is ``bounds.engine.budget.free_bytes``: on the host MemAvailable, and no more than the
process's own cap (RLIMIT_DATA, set by ``verifier.memory_guard.cap_process_memory`` in bench
workers) leaves; on a GPU, the memory CUDA reports free. Batch sizes computed from it follow
the device the search runs on.
"""

from __future__ import annotations

import torch

from bounds.engine.budget import free_bytes


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory free for this process on ``device`` now."""
    return free_bytes(device)


def memory_budget(wanted: int, share: float = 0.25, device: torch.device | str = "cpu") -> int:
    """``wanted`` bytes, but at most ``share`` of the memory free on ``device`` now."""
    return min(wanted, int(share * available_bytes(device)))
