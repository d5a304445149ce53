"""Sign probes (intermediate._Refiner._sign_probes): a value read only through its sign is
bounded by CROWN one side first where its interval's midpoint is negative (likely inactive).

The probed bounds must enclose sampled points, decide the same signs as bounding both sides
of every unstable position, give the consumers (the Relu outputs) the same intervals, and
so the same final bound; and they must bound fewer rows (else the probes are not taken)."""

from __future__ import annotations

import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp
from tests.bounds.test_conv_patches import _conv_1d, _forward_all, _resnet_2d

F64 = torch.float64


def _mlp():
    return random_mlp([6, 24, 24, 24, 3], seed=5)


NETS = [_resnet_2d, _conv_1d, _mlp]


@pytest.fixture(autouse=True)
def _float64_adjoints(monkeypatch):
    """Probed and unprobed passes are compared to 1e-9: float32 adjoints would round
    differently with different row counts (test_adjoint_precision.py covers them)."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _box(graph, radius: float, seed: int, batch: int = 3) -> Interval:
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, *graph.inputs[0].shape), generator=g, dtype=F64)
    return Interval(centre - radius, centre + radius)


def _both_ways(graph, box, monkeypatch):
    monkeypatch.setattr(intermediate, "SIGN_PROBES", False)
    both = compute_intermediate(graph, box, method="crown")
    monkeypatch.setattr(intermediate, "SIGN_PROBES", True)
    probed = compute_intermediate(graph, box, method="crown")
    return both, probed


def _sign_only(graph):
    return [n.name for n in graph.nodes if graph.consumers(n.name)
            and all(c.op == "Relu" for c in graph.consumers(n.name))]


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("radius", [0.05, 0.3])
def test_probed_bounds_enclose_sampled_points(net, radius, monkeypatch):
    graph = net()
    box = _box(graph, radius, seed=1)
    monkeypatch.setattr(intermediate, "SIGN_PROBES", True)
    inter = compute_intermediate(graph, box, method="crown")
    gen = torch.Generator().manual_seed(2)
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, generator=gen,
                                                             dtype=F64)
        for name, v in _forward_all(graph, x).items():
            bound = inter.bounds[name]
            assert bool((v >= bound.lower - 1e-9).all()), name
            assert bool((v <= bound.upper + 1e-9).all()), name


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("radius", [0.05, 0.3])
def test_probes_decide_the_same_signs_and_relu_intervals(net, radius, monkeypatch):
    graph = net()
    box = _box(graph, radius, seed=4)
    both, probed = _both_ways(graph, box, monkeypatch)
    names = _sign_only(graph)
    assert names
    for name in names:
        a, b = both.bounds[name], probed.bounds[name]
        for sign_of in (lambda iv: iv.lower >= 0, lambda iv: iv.upper <= 0):
            assert torch.equal(sign_of(a), sign_of(b)), name
        unstable = (a.lower < 0) & (a.upper > 0)
        torch.testing.assert_close(a.lower[unstable], b.lower[unstable], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(a.upper[unstable], b.upper[unstable], rtol=1e-9, atol=1e-9)
        # an active position keeps CROWN's upper bound (it sets later rounding allowances)
        active = a.lower >= 0
        torch.testing.assert_close(a.upper[active], b.upper[active], rtol=1e-9, atol=1e-9)
    for node in graph.nodes:
        if node.op == "Relu":
            a, b = both.bounds[node.name], probed.bounds[node.name]
            torch.testing.assert_close(a.lower, b.lower, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(a.upper, b.upper, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("net", NETS)
def test_probes_give_the_same_final_bound(net, monkeypatch):
    graph = net()
    box = _box(graph, 0.2, seed=6)
    out = graph.outputs[0]
    n_out = int(torch.tensor(out.shape).prod())
    coef = torch.randn((1, 2, n_out), generator=torch.Generator().manual_seed(7), dtype=F64)
    rhs = torch.zeros((1, 2), dtype=F64)
    results = {}
    for flag in (False, True):
        monkeypatch.setattr(intermediate, "SIGN_PROBES", flag)
        results[flag] = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    torch.testing.assert_close(results[True], results[False], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("net", [_resnet_2d, _mlp])  # (_conv_1d has one refined value)
def test_probes_bound_fewer_rows(net, monkeypatch):
    graph = net()
    box = _box(graph, 0.05, seed=8)
    rows = {}
    original = intermediate.crown_interval

    def counted(inter, name, mask, *args, signs=intermediate.BOTH_SIDES, **kwargs):
        rows[flag] = rows.get(flag, 0) + int(mask.sum()) * len(signs)
        return original(inter, name, mask, *args, signs=signs, **kwargs)

    monkeypatch.setattr(intermediate, "crown_interval", counted)
    for flag in (False, True):
        monkeypatch.setattr(intermediate, "SIGN_PROBES", flag)
        compute_intermediate(graph, box, method="crown")
    assert rows[True] < rows[False]
