"""A priority queue of stacked domains held in preallocated slots.

Branch-and-bound takes the worst-bounded domains out of its queue and puts children back every
step. Keeping the queue as one packed tensor per field means re-sorting and copying all of it
each step: with children that carry their parent's linear bounds (~30 KB per domain on ACAS Xu)
that copy dominated the step once tens of thousands were queued. Here every field lives in a
tensor of slots; taking the n worst costs a top-k over the priorities and a copy of n rows,
and children go into freed slots (the storage doubles when it runs out).

Fields are named tensors with a leading domain axis. A field that some pushes leave out is
optional: its slots are filled with ``fill(name)`` there (a value that means "nothing known"),
and ``drop`` frees it for good.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class SlotQueue:
    def __init__(self, fill: Callable[[str], float] = lambda name: 0.0):
        self.fill = fill
        self.fields: dict[str, torch.Tensor] = {}  # name -> [capacity, ...]
        self.priority: torch.Tensor | None = None  # [capacity]; free slots hold +inf
        self.used: torch.Tensor | None = None  # [capacity] bool
        self.free: torch.Tensor | None = None  # free slot indices (a stack: top at the end)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return 0 if self.priority is None else self.priority.shape[0]

    def nbytes(self, prefix: str = "") -> int:
        """Bytes held by the fields whose name starts with ``prefix``."""
        return sum(t.numel() * t.element_size() for name, t in self.fields.items()
                   if name.startswith(prefix))

    def push(self, fields: dict[str, torch.Tensor], priority: torch.Tensor) -> None:
        n = priority.shape[0]
        if n == 0:
            return
        self._reserve(fields, priority, n)
        slots, self.free = self.free[len(self.free) - n:], self.free[: len(self.free) - n]
        for name, store in self.fields.items():
            value = fields.get(name)
            if value is None:
                store[slots] = self.fill(name)
            else:
                store[slots] = value.to(store.dtype)
        self.priority[slots] = priority.to(self.priority.dtype)
        self.used[slots] = True
        self._count += n

    def pop_smallest(self, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Remove and return up to n entries with the smallest priority (fields, priority)."""
        n = min(n, self._count)
        key = torch.where(self.used, self.priority, torch.full_like(self.priority, float("inf")))
        # +inf priorities of real entries tie with free slots: rank used slots first among them
        slots = torch.topk(key, n, largest=False, sorted=False).indices
        if n and not bool(self.used[slots].all()):
            slots = self._smallest_used(key, n)
        out = {name: store[slots] for name, store in self.fields.items()}
        priority = self.priority[slots]
        self.used[slots] = False
        self.free = torch.cat([self.free, slots])
        self._count -= n
        return out, priority

    def widen(self, name: str, size: int) -> None:
        """Grow the last axis of field ``name`` to ``size`` (new entries ``fill(name)``): a
        field whose rows vary in length (``sparse_rows``) takes longer ones."""
        store = self.fields.get(name)
        if store is not None and store.shape[-1] < size:
            self.fields[name] = torch.nn.functional.pad(store, (0, size - store.shape[-1]),
                                                        value=self.fill(name))

    def drop(self, names) -> None:
        for name in names:
            self.fields.pop(name, None)

    def _smallest_used(self, key: torch.Tensor, n: int) -> torch.Tensor:
        used = self.used.nonzero().flatten()
        order = torch.argsort(key[used], stable=True)[:n]
        return used[order]

    def _reserve(self, fields: dict[str, torch.Tensor], priority: torch.Tensor, n: int) -> None:
        if self.priority is None:
            self.priority = torch.empty(0, dtype=priority.dtype, device=priority.device)
            self.used = torch.zeros(0, dtype=torch.bool, device=priority.device)
            self.free = torch.empty(0, dtype=torch.long, device=priority.device)
        cap = self.capacity
        for name, value in fields.items():  # a field first seen now: "nothing known" so far
            if name not in self.fields:
                self.fields[name] = torch.full((cap, *value.shape[1:]), self.fill(name),
                                               dtype=value.dtype, device=value.device)
        if len(self.free) >= n:
            return
        new_cap = max(2 * cap, cap + n - len(self.free), 64)
        grow = new_cap - cap
        for name, store in self.fields.items():
            # new slots are free: every push writes each field of the slots it takes, so
            # they need no fill (one copy of the old rows; a fill and a cat wrote the storage
            # three times: 3.4 of 53 s of resnet_2b prop_20's steps)
            grown = torch.empty((new_cap, *store.shape[1:]), dtype=store.dtype,
                                device=store.device)
            grown[:cap] = store
            self.fields[name] = grown
        self.priority = torch.cat([self.priority, torch.full(
            (grow,), float("inf"), dtype=self.priority.dtype, device=self.priority.device)])
        self.used = torch.cat([self.used, torch.zeros(grow, dtype=torch.bool,
                                                      device=self.used.device)])
        # new slots at the bottom of the stack: freed ones are reused first
        self.free = torch.cat([torch.arange(new_cap - 1, cap - 1, -1,
                                            device=self.free.device), self.free])
