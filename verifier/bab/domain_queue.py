"""The neuron-split search's open domains in slot storage (``slot_queue.SlotQueue``).

``NeuronDomains`` packs a batch of domains as stacked tensors; keeping the whole queue that
way meant sorting it and copying every field -- alphas and betas included, tens of KB per
domain on mnistfc 256x4 -- at every step (``NeuronDomains.take_worst``). Here each field of
each domain lives in a preallocated slot: taking the n worst costs a top-k over the margins
and a copy of n rows, and children go into freed slots. Betas are queued as their nonzero
positions and values (``sparse_rows``: nonzero only at a domain's splits).
"""

from __future__ import annotations

import torch

from verifier.bab import sparse_rows
from verifier.bab.neuron_domains import NeuronDomains
from verifier.bab.slot_queue import SlotQueue

_DICTS = ("splits", "lower", "upper", "alphas")
_PLAIN = ("bound", "refuted", "candidates", "depth")
# betas as values and positions (sparse_rows): fields "beta.v/<key>" and "beta.i/<key>"
_BETA_VALUES, _BETA_INDEX = "beta.v/", "beta.i/"


def _flatten(dom: NeuronDomains) -> dict[str, torch.Tensor]:
    out = {}
    for name in _DICTS:
        out.update({f"{name}/{k}": t for k, t in getattr(dom, name).items()})
    out.update({name: getattr(dom, name) for name in _PLAIN})
    for k, t in dom.betas.items():
        out[_BETA_VALUES + k], out[_BETA_INDEX + k] = sparse_rows.pack(t)
    return out


def _fill(name: str) -> float:
    # a field a push left out: no split, no warm start (0 is a valid alpha and beta), no
    # candidate, no beta position; the bounds fields are always pushed
    return -1.0 if name == "candidates" or name.startswith(_BETA_INDEX) else 0.0


class DomainQueue:
    """Open domains, worst margin first out."""

    def __init__(self) -> None:
        self.slots = SlotQueue(fill=_fill)
        self.beta_shapes: dict[str, tuple[int, ...]] = {}  # beta key -> [*shape] per row

    def __len__(self) -> int:
        return len(self.slots)

    def push(self, dom: NeuronDomains) -> None:
        if not len(dom):
            return
        flat = _flatten(dom)
        for k, t in dom.betas.items():
            self.beta_shapes.setdefault(k, tuple(t.shape[2:]))
            self._align(flat, k)
        self.slots.push(flat, dom.margin)

    def _align(self, flat: dict[str, torch.Tensor], key: str) -> None:
        """The pushed and the stored positions of beta ``key`` to one length (the longer)."""
        values, index = flat[_BETA_VALUES + key], flat[_BETA_INDEX + key]
        stored = self.slots.fields.get(_BETA_INDEX + key)
        k = max(index.shape[1], 0 if stored is None else stored.shape[1])
        for name in (_BETA_VALUES + key, _BETA_INDEX + key):
            self.slots.widen(name, k)
        flat[_BETA_VALUES + key], flat[_BETA_INDEX + key] = sparse_rows.pad_to(values, index, k)

    def pop_worst(self, n: int) -> NeuronDomains:
        """Remove and return up to n domains with the smallest margin."""
        got, margin = self.slots.pop_smallest(n)
        parts: dict = {name: {} for name in _DICTS}
        betas = {}
        for key, t in got.items():
            head, _, rest = key.partition("/")
            if head + "/" == _BETA_VALUES:
                betas[rest] = sparse_rows.unpack(t, got[_BETA_INDEX + rest],
                                                 self.beta_shapes[rest])
            elif head + "/" == _BETA_INDEX:
                continue
            elif rest:
                parts[head][rest] = t
            else:
                parts[head] = t
        return NeuronDomains(**parts, betas=betas, margin=margin)

    def bytes_per_domain(self) -> int:
        return self.slots.nbytes() // max(1, self.slots.capacity)

    def min_margin(self) -> float | None:
        """The worst open margin (None when empty)."""
        if not len(self.slots):
            return None
        s = self.slots
        return float(torch.where(s.used, s.priority, torch.full_like(s.priority, 1e300)).min())
