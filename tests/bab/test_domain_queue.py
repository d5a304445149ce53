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


def sparse_domains(n: int, splits_per_domain: int, gen: torch.Generator) -> NeuronDomains:
    """Domains whose betas are nonzero at ``splits_per_domain`` positions (one row zero)."""
    dom = domains(n, gen)
    betas = torch.zeros(n, 2, 4, 5)
    for i in range(n):
        pos = torch.randperm(20, generator=gen)[:splits_per_domain]
        betas[i, 0].view(-1)[pos] = torch.rand(len(pos), generator=gen) + 0.1
    dom.betas = {"z": betas}
    return dom


def test_sparse_betas_come_back_exactly_and_take_less_room():
    gen = torch.Generator().manual_seed(1)
    q = DomainQueue()
    pushed = {}
    # pushes with more, then fewer, then no nonzero betas: the stored width grows and
    # narrower pushes are padded
    for n, k in ((5, 2), (9, 6), (4, 1), (3, 0), (6, 20)):
        d = sparse_domains(n, k, gen)
        pushed.update(rows(d))
        q.push(d)
        if k == 1:
            for key, row in rows(q.pop_worst(6)).items():
                assert all(torch.equal(a, b) for a, b in zip(row, pushed.pop(key), strict=True))
    rest = q.pop_worst(100)
    assert len(rest) == len(pushed)
    for key, row in rows(rest).items():
        assert all(torch.equal(a, b) for a, b in zip(row, pushed.pop(key), strict=True))


def test_a_few_splits_take_a_few_positions():
    gen = torch.Generator().manual_seed(2)
    q = DomainQueue()
    q.push(sparse_domains(50, 3, gen))
    assert q.slots.fields["beta.v/z"].shape[1:] == (2, 3)
    assert q.slots.fields["beta.i/z"].shape[1:] == (3,)


def test_relu_alphas_are_kept_where_the_relu_is_unstable():
    """A Relu's alphas come back exactly at the domain's unstable positions (l < 0 < u) and as
    0 where it is stable (its relaxation there reads no alpha); other nodes' alphas whole."""
    gen = torch.Generator().manual_seed(3)
    dom = domains(40, gen)
    dom.lower["z"] = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    dom.upper["z"] = dom.lower["z"] + torch.rand(40, 3, generator=gen, dtype=torch.float64)
    dom.alphas["other"] = torch.rand(40, 2, 5, generator=gen)
    q = DomainQueue(kink_inputs={"relu": "z"})
    q.push(dom)
    got = q.pop_worst(40)
    order = {float(m): i for i, m in enumerate(dom.margin)}
    idx = torch.tensor([order[float(m)] for m in got.margin])
    unstable = ((dom.lower["z"] < 0) & (dom.upper["z"] > 0))[idx].unsqueeze(1)
    want = torch.where(unstable, dom.alphas["relu"][idx], 0.0)
    assert torch.equal(got.alphas["relu"], want)
    assert torch.equal(got.alphas["other"], dom.alphas["other"][idx])
    assert q.slots.fields["alpha.i/relu"].shape[1] == int(unstable.sum((1, 2)).max())
