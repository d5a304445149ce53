"""The neuron-split search's open domains in slot storage (``slot_queue.SlotQueue``).

``NeuronDomains`` packs a batch of domains as stacked tensors; keeping the whole queue that
way meant sorting it and copying every field -- alphas and betas included, tens of KB per
domain on mnistfc 256x4 -- at every step (``NeuronDomains.take_worst``). Here each field of
each domain lives in a preallocated slot: taking the n worst costs a top-k over the margins
and a copy of n rows, and children go into freed slots.
"""

from __future__ import annotations

import torch

from verifier.bab.neuron_domains import NeuronDomains
from verifier.bab.slot_queue import SlotQueue

_DICTS = ("splits", "lower", "upper", "alphas", "betas")
_PLAIN = ("bound", "refuted", "candidates", "depth")


def _flatten(dom: NeuronDomains) -> dict[str, torch.Tensor]:
    out = {}
    for name in _DICTS:
        out.update({f"{name}/{k}": t for k, t in getattr(dom, name).items()})
    out.update({name: getattr(dom, name) for name in _PLAIN})
    return out


def _fill(name: str) -> float:
    # a field a push left out: no split, no warm start (0 is a valid alpha and beta), no
    # candidate; the bounds fields are always pushed
    return -1.0 if name == "candidates" else 0.0


class DomainQueue:
    """Open domains, worst margin first out."""

    def __init__(self) -> None:
        self.slots = SlotQueue(fill=_fill)

    def __len__(self) -> int:
        return len(self.slots)

    def push(self, dom: NeuronDomains) -> None:
        if len(dom):
            self.slots.push(_flatten(dom), dom.margin)

    def pop_worst(self, n: int) -> NeuronDomains:
        """Remove and return up to n domains with the smallest margin."""
        got, margin = self.slots.pop_smallest(n)
        parts: dict = {name: {} for name in _DICTS}
        for key, t in got.items():
            head, _, rest = key.partition("/")
            if rest:
                parts[head][rest] = t
            else:
                parts[head] = t
        return NeuronDomains(**parts, margin=margin)

    def bytes_per_domain(self) -> int:
        return self.slots.nbytes() // max(1, self.slots.capacity)

    def min_margin(self) -> float | None:
        """The worst open margin (None when empty)."""
        if not len(self.slots):
            return None
        s = self.slots
        return float(torch.where(s.used, s.priority, torch.full_like(s.priority, 1e300)).min())
