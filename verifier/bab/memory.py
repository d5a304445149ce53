"""How much memory a search may hold: a fixed budget, capped by what the machine has free."""

from __future__ import annotations


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_budget(wanted: int, share: float = 0.25) -> int:
    """``wanted`` bytes, but at most ``share`` of the memory available now."""
    free = available_bytes()
    return wanted if free is None else min(wanted, int(share * free))
