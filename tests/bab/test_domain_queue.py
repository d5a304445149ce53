"""The neuron-split search's slot queue gives back exactly what went in, worst first (interval
bounds: enclosed by their float32 roundings outward)."""

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
        # bounds that float32 holds exactly come back exactly (see the outward test below)
        {"z": r(n, 3).float().double()}, {"z": (r(n, 3) + 5).float().double()},
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


def test_bounds_come_back_rounded_outward_to_float32_in_their_own_dtype():
    """float64 bounds are stored in float32: the popped lower bound is the largest float32 at
    or below the pushed one, the upper the smallest at or above; the dtype is the pushed one
    and so is every neuron's sign pattern (stable stays stable, unstable unstable)."""
    gen = torch.Generator().manual_seed(4)
    dom = domains(30, gen)
    lo = torch.randn(30, 3, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(
        -40, 40, (30, 3), generator=gen).double()
    lo[0] = torch.tensor([0.0, -1e-300, 1e300], dtype=torch.float64)
    dom.lower["z"] = lo
    dom.upper["z"] = torch.where(lo > 0, lo * 1.5, lo * -0.5) + (lo == 0)
    dom.upper["z"][1] = torch.tensor([1e-300, -0.0, 3.5e38], dtype=torch.float64)
    q = DomainQueue(kink_inputs={"relu": "z"})
    q.push(dom)
    got = q.pop_worst(30)
    idx = torch.tensor([{float(m): i for i, m in enumerate(dom.margin)}[float(m)]
                        for m in got.margin])
    want_lo, want_up = dom.lower["z"][idx], dom.upper["z"][idx]
    got_lo, got_up = got.lower["z"], got.upper["z"]
    assert got_lo.dtype == got_up.dtype == torch.float64
    assert bool((got_lo <= want_lo).all()) and bool((got_up >= want_up).all())
    assert torch.equal(got_lo, got_lo.float().double()), "stored as float32 values"
    # the nearest float32 outside: the next float32 towards the bound is inside (beyond
    # float32's range: the infinity)
    lo32, up32 = got_lo.float(), got_up.float()
    assert bool(torch.where(torch.isinf(lo32), want_lo < -torch.finfo(torch.float32).max,
                            torch.nextafter(lo32, torch.full_like(lo32, torch.inf)).double()
                            > want_lo).all())
    assert bool(torch.where(torch.isinf(up32), want_up > torch.finfo(torch.float32).max,
                            torch.nextafter(up32, torch.full_like(up32, -torch.inf)).double()
                            < want_up).all())
    for a, b in ((got_lo, want_lo), (got_up, want_up)):
        assert torch.equal(a >= 0, b >= 0) and torch.equal(a <= 0, b <= 0)
    assert q.slots.fields["lower/z"].dtype == torch.float32
