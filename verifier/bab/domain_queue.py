"""The neuron-split search's open domains in slot storage (``slot_queue.SlotQueue``).

``NeuronDomains`` packs a batch of domains as stacked tensors; keeping the whole queue that
way meant sorting it and copying every field -- alphas and betas included, tens of KB per
domain on mnistfc 256x4 -- at every step (``NeuronDomains.take_worst``). Here each field of
each domain lives in a preallocated slot: taking the n worst costs a top-k over the margins
and a copy of n rows, and children go into freed slots. Betas are queued as their nonzero
positions and values (``sparse_rows``: nonzero only at a domain's splits), and so are the
alphas of Relu-like kinks, at the positions where the domain's kink is unstable
(``kink_inputs``). Interval bounds are queued in float32, rounded outward (the lower bound
down, the upper up): a popped domain's bounds enclose the ones it was pushed with, at half
the memory (bounds were 58% of an oval21 base domain in float64).
"""

from __future__ import annotations

import torch

from bounds.engine.rounding import float32_above, float32_below
from verifier.bab import sparse_rows
from verifier.bab.neuron_domains import NeuronDomains
from verifier.bab.slot_queue import SlotQueue

_DICTS = ("splits", "lower", "upper", "alphas")
_PLAIN = ("bound", "refuted", "candidates", "depth")
# packed fields (sparse_rows): "<values prefix><key>" and "<index prefix><key>"
_PACKED = {"betas": ("beta.v/", "beta.i/"), "alphas": ("alpha.v/", "alpha.i/")}
_INDEX = tuple(index for _, index in _PACKED.values())
_BY_VALUES = {v_pre: (name, i_pre) for name, (v_pre, i_pre) in _PACKED.items()}
_OUTWARD = {"lower": float32_below, "upper": float32_above}


def _flatten(dom: NeuronDomains, kink_inputs: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    packed_alphas = {k: kink_inputs[k] for k, t in dom.alphas.items()
                     if k in kink_inputs and kink_inputs[k] in dom.lower
                     and t.shape[2:] == dom.lower[kink_inputs[k]].shape[1:]}
    for name in _DICTS:
        store = _OUTWARD.get(name, lambda t: t)
        out.update({f"{name}/{k}": store(t) for k, t in getattr(dom, name).items()
                    if name != "alphas" or k not in packed_alphas})
    out.update({name: getattr(dom, name) for name in _PLAIN})
    for k, t in dom.betas.items():
        out[_PACKED["betas"][0] + k], out[_PACKED["betas"][1] + k] = sparse_rows.pack(t)
    for k, z in packed_alphas.items():
        unstable = (dom.lower[z] < 0) & (dom.upper[z] > 0)
        out[_PACKED["alphas"][0] + k], out[_PACKED["alphas"][1] + k] = sparse_rows.pack(
            dom.alphas[k], keep=unstable)
    return out


def _fill(name: str) -> float:
    # a field a push left out: no split, no warm start (0 is a valid alpha and beta), no
    # candidate, no packed position; the bounds fields are always pushed
    return -1.0 if name == "candidates" or name.startswith(_INDEX) else 0.0


class DomainQueue:
    """Open domains, worst margin first out."""

    def __init__(self, kink_inputs: dict[str, str] | None = None) -> None:
        """``kink_inputs``: node -> its input value (where the domains' bounds live), for the
        Relu-like kink nodes whose alphas are queued at unstable positions only."""
        self.slots = SlotQueue(fill=_fill)
        self.kink_inputs = dict(kink_inputs or {})
        self.shapes: dict[tuple[str, str], tuple[int, ...]] = {}  # packed field -> [*shape]
        self.bound_dtypes: dict[str, torch.dtype] = {}  # "lower/<value>" ... -> pushed dtype

    def __len__(self) -> int:
        return len(self.slots)

    def push(self, dom: NeuronDomains) -> None:
        if not len(dom):
            return
        for name in _OUTWARD:
            for k, t in getattr(dom, name).items():
                self.bound_dtypes.setdefault(f"{name}/{k}", t.dtype)
        flat = _flatten(dom, self.kink_inputs)
        for name, (v_pre, i_pre) in _PACKED.items():
            for k, t in getattr(dom, name).items():
                if v_pre + k in flat:
                    self.shapes.setdefault((name, k), tuple(t.shape[2:]))
                    self._align(flat, v_pre + k, i_pre + k)
        self.slots.push(flat, dom.margin)

    def _align(self, flat: dict[str, torch.Tensor], v_name: str, i_name: str) -> None:
        """The pushed and the stored positions of a packed field to one length (the
        longer)."""
        stored = self.slots.fields.get(i_name)
        k = max(flat[i_name].shape[1], 0 if stored is None else stored.shape[1])
        for name in (v_name, i_name):
            self.slots.widen(name, k)
        flat[v_name], flat[i_name] = sparse_rows.pad_to(flat[v_name], flat[i_name], k)

    def pop_worst(self, n: int) -> NeuronDomains:
        """Remove and return up to n domains with the smallest margin."""
        got, margin = self.slots.pop_smallest(n)
        parts: dict = {name: {} for name in (*_DICTS, "betas")}
        for key, t in got.items():
            head, _, rest = key.partition("/")
            if head + "/" in _BY_VALUES:
                name, i_pre = _BY_VALUES[head + "/"]
                parts[name][rest] = sparse_rows.unpack(t, got[i_pre + rest],
                                                       self.shapes[(name, rest)])
            elif key.startswith(_INDEX):
                continue
            elif rest:
                parts[head][rest] = t.to(self.bound_dtypes.get(key, t.dtype))
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
