"""The neuron-split search's slot queue gives back exactly what went in, worst first."""

from __future__ import annotations

from dataclasses import fields

import torch

from verifier.bab.domain_queue import DomainQueue
from verifier.bab.neuron_domains import NeuronDomains


def domains(n: int, gen: torch.Generator) -> NeuronDomains:
    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return NeuronDomains(
        {"z": torch.randint(-1, 2, (n, 3), generator=gen).to(torch.int8)},
        {"z": r(n, 3)}, {"z": r(n, 3) + 5},
        {"relu": r(n, 2, 3).float()}, {"z": r(n, 2, 3).float()},
        r(n, 2), r(n), torch.rand(n, 1, generator=gen) < 0.3,
        torch.randint(-1, 9, (n, 3), generator=gen), torch.randint(0, 9, (n,), generator=gen))


def rows(dom: NeuronDomains) -> dict[float, list]:
    """margin -> every field's row (margins are distinct random floats)."""
    out = {}
    for i in range(len(dom)):
        row = []
        for f in fields(dom):
            v = getattr(dom, f.name)
            row += [t[i] for _, t in sorted(v.items())] if isinstance(v, dict) else [v[i]]
        out[float(dom.margin[i])] = row
    return out


def test_pop_worst_returns_the_smallest_margins_with_all_fields():
    gen = torch.Generator().manual_seed(0)
    q = DomainQueue()
    pushed = {}
    for n in (1, 7, 70, 3):  # several pushes: the storage grows and reuses freed slots
        d = domains(n, gen)
        pushed.update(rows(d))
        q.push(d)
        if n == 70:
            for k, row in rows(q.pop_worst(20)).items():
                assert all(torch.equal(a, b) for a, b in zip(row, pushed.pop(k), strict=True))
    assert len(q) == len(pushed)
    assert q.min_margin() == min(pushed)
    got = q.pop_worst(10)
    assert sorted(float(m) for m in got.margin) == sorted(pushed)[:10]
    for k, row in rows(got).items():
        assert all(torch.equal(a, b) for a, b in zip(row, pushed.pop(k), strict=True))
    rest = q.pop_worst(1000)
    assert len(q) == 0 and q.min_margin() is None and len(rest) == len(pushed)
