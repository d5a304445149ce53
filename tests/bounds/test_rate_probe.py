"""The rate probe of ``intermediate.crown_interval``: with no measured rate, a call bounds a
few positions first and the rest at the rows per pass element that rate allows. The probe
and the rest must give the bounds of one call with the rate known (the same rows, packed
differently), enclose sampled points, and split only when the rate is unknown."""

from __future__ import annotations

import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.crown import rates
from bounds.engine.intermediate import _rate_key, compute_intermediate, crown_interval
from bounds.engine.results import PassCache
from bounds.types import Interval
from tests.bounds.nets import random_mlp
from tests.bounds.spies import spy
from tests.bounds.test_conv_patches import _conv_1d, _forward_all, _resnet_2d

F64 = torch.float64
NETS = [_resnet_2d, _conv_1d, lambda: random_mlp([6, 24, 24, 24, 3], seed=5)]


@pytest.fixture(autouse=True)
def _float64_adjoints(monkeypatch):
    """Compared to 1e-9: float32 adjoints would round differently with other row counts."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _setting(net, seed=1, radius=0.3, batch=3):
    graph = net()
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, *graph.inputs[0].shape), generator=g, dtype=F64)
    box = Interval(centre - radius, centre + radius)
    inter = compute_intermediate(graph, box, method="ibp")
    name = [n.name for n in graph.nodes if any(c.op == "Relu"
                                               for c in graph.consumers(n.name))][-1]
    b = inter.bounds[name]
    mask = ((b.lower < 0) & (b.upper > 0)).flatten(1)
    return graph, box, inter, name, mask


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("signs", [(1.0, -1.0), (-1.0,)])
def test_probe_then_rest_equals_one_call_and_encloses_points(net, signs, monkeypatch):
    graph, box, inter, name, mask = _setting(net)
    assert int(mask.sum()) > 4
    probes = spy(monkeypatch, intermediate, "_probed")
    known = PassCache()
    rates(known)[_rate_key(graph)] = 1e-9  # a measured rate: one call, no probe
    whole, _ = crown_interval(inter, name, mask, cache=known, signs=signs)
    assert not probes
    real_rows = intermediate.chunk_rows
    # unmeasured: a 4-row first chunk, so the probe leaves a rest
    monkeypatch.setattr(intermediate, "chunk_rows", lambda graph, cache, *a, **k: 4
                        if rates(cache).get(_rate_key(graph)) is None
                        else real_rows(graph, cache, *a, **k))
    probed, _ = crown_interval(inter, name, mask, cache=PassCache(), signs=signs)
    assert len(probes) == 1
    for a, b in ((whole.lower, probed.lower), (whole.upper, probed.upper)):
        finite = torch.isfinite(a)
        assert torch.equal(finite, torch.isfinite(b))
        assert torch.allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9)
    refined = probed.lower if signs[0] > 0 else probed.upper
    assert torch.equal(torch.isfinite(refined).flatten(1), mask)  # every position bounded
    gen = torch.Generator().manual_seed(2)
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, generator=gen,
                                                             dtype=F64)
        v = _forward_all(graph, x)[name]
        assert bool((v >= probed.lower - 1e-9).all() and (v <= probed.upper + 1e-9).all())


def test_probe_takes_the_first_positions_domain_by_domain():
    mask = torch.tensor([[True, False, True, True], [True, True, False, False]])
    probe = intermediate._first_positions(mask, 4)
    assert probe.tolist() == [[True, False, True, True], [True, False, False, False]]


def test_last_value_refines_the_chunks_that_fit(monkeypatch):
    """With a rate that prices the whole refinement above REFINE_TIME_SHARE of the time left
    but one chunk below LAST_REFINE_SHARE: an ordinary call refines nothing, a ``last`` call
    refines chunk by chunk until the next chunk no longer fits, and what it refined is the
    one-call bound there (infinite elsewhere, which the caller keeps as intervals)."""
    graph, box, inter, name, mask = _setting(NETS[2], batch=1)
    count = int(mask.sum())
    assert count > 8
    monkeypatch.setattr(intermediate, "chunk_rows", lambda *a, **k: 4)  # 2 positions a chunk
    full = PassCache()
    rates(full)[_rate_key(graph)] = 1e-12
    whole, _ = crown_interval(inter, name, mask, cache=full)
    depth = intermediate.prefix_elements(graph, name)
    # every position would need 2x the time left; one chunk of 2 positions fits in 0.8
    rate = 2.0 / (2 * count * depth)
    monkeypatch.setattr(intermediate, "time_left", lambda: 1.0)
    cache = PassCache()
    rates(cache)[_rate_key(graph)] = rate
    none, _ = crown_interval(inter, name, mask, cache=cache)
    assert none is None
    monkeypatch.setattr(intermediate, "_rate_key", lambda *a, **k: "frozen")  # keep the rate
    cache = PassCache()
    rates(cache)["frozen"] = rate
    part, _ = crown_interval(inter, name, mask, cache=cache, last=True)
    done = torch.isfinite(part.lower.flatten(1)) & mask
    assert bool(done.all())  # every chunk fits (the rate stays), so all are refined
    assert torch.allclose(part.lower.flatten(1)[mask], whole.lower.flatten(1)[mask], atol=1e-9)
    rates(cache)["frozen"] = 0.9 / (2 * depth)  # now a chunk of 2 needs 0.9 > 0.8: none
    later, _ = crown_interval(inter, name, mask, cache=cache, last=True)
    assert later is None
