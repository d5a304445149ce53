"""Every path the intermediate-bound cost model can choose (bounds/engine/budget.py, used by
intermediate.py and ibp.py) encloses sampled points: forward mode over the free inputs,
backward CROWN on the unstable rows, IBP where neither fits, backward passes chunked to a
memory budget and interval passes chunked over a batch of domains."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import bounds.engine.budget as budget
import bounds.engine.deadline as deadline
import bounds.engine.ibp as ibp
import bounds.engine.intermediate as intermediate
from bounds.engine.deadline import DeadlineExceeded, engine_deadline
from bounds.engine.forward import run_graph
from bounds.engine.forward_linear import free_coordinates, free_input_functions
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import PassCache
from bounds.types import Interval
from tests.bounds.nets import mlp, random_mlp
from tests.bounds.spies import spy
from tests.bounds.structured_nets import maxpool_cnn

F64 = torch.float64
TOL = 1e-9
# a net whose forward mode costs under FORWARD_COST_SHARE of backward CROWN's worst case
FEW_INPUTS = [2, 64, 64, 64, 64, 3]


def _box(shape, batch: int, radius: float, seed: int, fixed_share: float = 0.0) -> Interval:
    """``batch`` boxes around random centres; ``fixed_share`` of the coordinates are points."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn((batch, *shape), generator=gen, dtype=F64)
    width = radius * torch.rand((batch, *shape), generator=gen, dtype=F64)
    if fixed_share:
        fixed = torch.rand(shape, generator=gen) < fixed_share
        width = torch.where(fixed, torch.zeros_like(width), width)
    return Interval(centre - width, centre + width)


def _assert_encloses(graph, box: Interval, inter, n: int = 300) -> None:
    """Points sampled in each domain's box (corners included) lie within every value's
    interval of that domain."""
    gen = torch.Generator().manual_seed(7)
    for b in range(box.lower.shape[0]):
        lo, hi = box.lower[b:b + 1], box.upper[b:b + 1]
        t = torch.rand((n, *lo.shape[1:]), generator=gen, dtype=F64)
        t[: n // 4] = t[: n // 4].round()  # corners
        values = run_graph(graph, lo + (hi - lo) * t, keep_all=True)
        for name, iv in inter.bounds.items():
            v = values[name]
            assert bool((v >= iv.lower[b] - TOL).all()), (name, b)
            assert bool((v <= iv.upper[b] + TOL).all()), (name, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_path_with_few_inputs(monkeypatch, seed):
    """2 inputs, four 64-wide layers: forward mode is cheap (under 1% of backward CROWN's
    worst case), goes along with CROWN, and the bounds enclose samples; CROWN still refines
    what stays unstable."""
    graph = random_mlp(FEW_INPUTS, seed=seed)
    box = _box((1, 2), 3, 1.0, seed)
    monkeypatch.setattr(budget, "FORWARD_MIN_BACKWARD_MACS", 0)  # as if CROWN were costly
    crown_calls = spy(monkeypatch, intermediate, "crown_interval")
    refiner = spy(monkeypatch, intermediate, "free_input_functions")
    inter = compute_intermediate(graph, box, method="crown")
    assert refiner, "the cost model chose forward mode for 2 inputs"
    assert crown_calls, "CROWN refined the positions forward mode left unstable"
    _assert_encloses(graph, box, inter)


def test_no_forward_mode_where_backward_crown_is_cheap(monkeypatch):
    """A small net (backward CROWN far below FORWARD_MIN_BACKWARD_MACS): CROWN alone."""
    graph = random_mlp([4, 32, 32, 32, 3], seed=0)
    forward = spy(monkeypatch, intermediate, "free_input_functions")
    compute_intermediate(graph, _box((1, 4), 3, 1.0, 0), method="crown")
    assert not forward


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_over_free_coordinates_only(seed):
    """A box that fixes most coordinates: forward mode carries only the free ones, and its
    input functions reproduce every point of the box."""
    graph = maxpool_cnn(seed, deep=True)
    box = _box((1, 1, 6, 6), 2, 0.5, seed, fixed_share=0.8)
    free = free_coordinates(box)
    assert 0 < free.shape[0] < 36
    funcs, zbox = free_input_functions(box, (1, 1, 6, 6), free)
    again = funcs.concretize(zbox)
    assert torch.allclose(again.lower, box.lower) and torch.allclose(again.upper, box.upper)
    inter = compute_intermediate(graph, box, method="forward")
    _assert_encloses(graph, box, inter)


@pytest.mark.parametrize("seed", [0, 1])
def test_backward_path_with_many_inputs(monkeypatch, seed):
    """300 inputs into 8-wide layers: backward rows (16 a layer) are far cheaper than forward
    weights (300 an element), so only CROWN refines; bounds enclose samples and are at least
    as tight as IBP."""
    rng = np.random.default_rng(seed)
    sizes = [300, 8, 8, 8, 2]
    graph = mlp([(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
                 for i, o in zip(sizes[:-1], sizes[1:], strict=True)])
    box = _box((1, 300), 2, 0.3, seed)
    forward = spy(monkeypatch, intermediate, "free_input_functions")
    crown_calls = spy(monkeypatch, intermediate, "crown_interval")
    inter = compute_intermediate(graph, box, method="crown")
    plain = compute_intermediate(graph, box, method="ibp")
    assert not forward and crown_calls
    _assert_encloses(graph, box, inter)
    for name, iv in inter.bounds.items():
        assert bool((iv.lower >= plain.bounds[name].lower - TOL).all()), name


def test_ibp_path_when_neither_pays(monkeypatch):
    """Many inputs (no forward mode) and a measured CROWN rate that fits nothing: every value
    keeps exactly its IBP interval, which encloses samples."""
    rng = np.random.default_rng(3)
    sizes = [300, 16, 16, 2]
    graph = mlp([(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
                 for i, o in zip(sizes[:-1], sizes[1:], strict=True)])
    box = _box((1, 300), 2, 0.3, 3)
    with engine_deadline(10.0 + time.monotonic()):
        intermediate.rates(PassCache())[intermediate._rate_key(graph)] = 1e6  # s per unit
        inter = compute_intermediate(graph, box, method="crown")
    plain = compute_intermediate(graph, box, method="ibp")
    for name, iv in inter.bounds.items():
        assert torch.equal(iv.lower, plain.bounds[name].lower), name
        assert torch.equal(iv.upper, plain.bounds[name].upper), name
    _assert_encloses(graph, box, inter)


@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_backward_matches_one_pass(monkeypatch, seed):
    """A memory budget of a few rows per chunk (little free memory): the same bounds as one
    pass, enclosing samples."""
    graph = maxpool_cnn(seed, deep=True)
    box = _box((1, 1, 6, 6), 2, 0.4, seed)
    whole = compute_intermediate(graph, box, method="crown")
    elements = []
    real = budget.coef_budget
    monkeypatch.setattr(budget, "free_bytes", lambda device: 6_000)
    monkeypatch.setattr(intermediate, "coef_budget",
                        lambda *a: elements.append(real(*a)) or elements[-1])
    chunked = compute_intermediate(graph, box, method="crown", cache=PassCache())
    assert elements and max(elements) < 200, "the free memory capped the chunk"
    for name, iv in whole.bounds.items():
        assert torch.allclose(iv.lower, chunked.bounds[name].lower, atol=1e-9), name
        assert torch.allclose(iv.upper, chunked.bounds[name].upper, atol=1e-9), name
    _assert_encloses(graph, box, chunked)


def test_chunked_interval_pass_matches_one_call(monkeypatch):
    """A batch of domains above the chunking threshold: IBP in timed chunks gives the same
    intervals (and rounding allowances) as one call, enclosing samples."""
    graph = maxpool_cnn(4, deep=True)
    box = _box((1, 1, 6, 6), 9, 0.3, 4)
    whole = compute_intermediate(graph, box, method="ibp")
    monkeypatch.setattr(ibp, "CHUNK_MIN_ELEMENTS", 1)
    monkeypatch.setattr(deadline, "FIRST_CHUNK_ELEMENTS", 100)
    parts = spy(monkeypatch, ibp, "_node_interval")
    chunked = compute_intermediate(graph, box, method="ibp")
    assert len(parts) > len(graph.nodes), "some node was bounded in several chunks"
    for name, iv in whole.bounds.items():
        assert torch.equal(iv.lower, chunked.bounds[name].lower), name
        assert torch.equal(iv.upper, chunked.bounds[name].upper), name
    _assert_encloses(graph, box, chunked)


def test_chunked_interval_pass_stops_at_the_deadline(monkeypatch):
    """The clock is read between chunks of one node's batch, not only between nodes."""
    graph = maxpool_cnn(5)
    box = _box((1, 1, 6, 6), 9, 0.3, 5)
    monkeypatch.setattr(ibp, "CHUNK_MIN_ELEMENTS", 1)
    checks = spy(monkeypatch, deadline, "check_deadline")
    node = graph.nodes[0]
    bounds = {graph.inputs[0].name: box}
    ibp.propagate_node(graph, node, bounds, box.lower.device, F64)
    assert checks, "the chunked node read the clock"
    with engine_deadline(0.0), pytest.raises(DeadlineExceeded):
        ibp.propagate_node(graph, node, bounds, box.lower.device, F64)


def test_alpha_refinement_rate_does_not_starve_plain_crown():
    """A slow rate measured by alpha-optimised refinements (their own key) leaves plain CROWN
    refinements their estimate: they still run and tighten IBP."""
    rng = np.random.default_rng(3)
    sizes = [300, 16, 16, 2]
    graph = mlp([(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
                 for i, o in zip(sizes[:-1], sizes[1:], strict=True)])
    box = _box((1, 300), 2, 0.3, 3)
    plain = compute_intermediate(graph, box, method="ibp")
    with engine_deadline(10.0 + time.monotonic()):
        intermediate.rates(PassCache())[intermediate._rate_key(graph, 5)] = 1e6
        inter = compute_intermediate(graph, box, method="crown")
    tighter = inter.bounds["lin1"].lower > plain.bounds["lin1"].lower + 1e-9
    assert bool(tighter.any())
    _assert_encloses(graph, box, inter)


def test_forward_mode_stops_where_its_next_step_would_not_fit(monkeypatch, caplog):
    """A forward-mode step priced beyond the time left ends forward mode for the pass (the
    engines read the clock between nodes only; one step over many domains and free inputs
    ran past a search step's deadline): the pass finishes with IBP and CROWN, sound, and
    before its deadline."""
    graph = random_mlp(FEW_INPUTS, seed=0)
    box = _box((1, 2), 3, 1.0, 0)
    monkeypatch.setattr(budget, "FORWARD_MIN_BACKWARD_MACS", 0)
    monkeypatch.setattr(intermediate, "FORWARD_DEFAULT_RATE", 10.0)  # seconds per MAC
    funcs = spy(monkeypatch, intermediate, "propagate_functions")
    began = time.monotonic()
    with caplog.at_level("INFO"), engine_deadline(time.monotonic() + 30.0):
        inter = compute_intermediate(graph, box, method="crown")
    assert time.monotonic() - began < 30.0
    assert "forward-mode bounds stop" in caplog.text
    assert not funcs, "no forward-mode step started"
    _assert_encloses(graph, box, inter)
    with engine_deadline(None):  # no deadline: the same pass keeps forward mode
        compute_intermediate(graph, box, method="crown")
    assert funcs


def test_affordable_window_is_the_longest_that_fits():
    """Rows that do not fit whole go back as many nodes as their budget pays for at the
    measured rate (elements of the window's values), at least MIN_WINDOW_NODES."""
    graph = random_mlp([4, 8, 8, 8, 8, 8, 3], seed=0)  # 11 nodes of 8 elements, then 3
    cache, rate = PassCache(), 1e-3
    intermediate.rates(cache)[intermediate._rate_key(graph)] = rate
    last = graph.nodes[-1].name
    names, depth = intermediate._affordable_window(graph, cache, last, 1, rate * (3 + 5 * 8))
    assert names == {n.name for n in graph.nodes[:5]} and depth == 3 + 5 * 8
    too_short = rate * (3 + (intermediate.MIN_WINDOW_NODES - 2) * 8)
    assert intermediate._affordable_window(graph, cache, last, 1, too_short) is None
    assert intermediate._affordable_window(graph, PassCache(), last, 1, 1e9) is None  # no rate


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_windowed_rows_enclose_sampled_points(monkeypatch, seed):
    """The CROWN rows of a deep net that do not fit whole stop MIN_WINDOW_NODES nodes back,
    at the intervals there: the bounds enclose sampled points and are tighter than IBP."""
    graph = random_mlp([6, 16, 16, 16, 16, 16, 16, 4], seed=seed)
    box = _box((1, 6), 2, 0.4, seed)
    names = [n.name for n in graph.nodes]
    windows = []

    def window(graph, cache, name, work, budget_s):
        k = names.index(name)
        cut = max(0, k + 1 - intermediate.MIN_WINDOW_NODES)
        windows.append((name, cut))
        return frozenset(names[:cut]), sum(math.prod(n.shape) for n in graph.nodes[cut:k + 1])

    whole = compute_intermediate(graph, box, method="crown")
    monkeypatch.setattr(intermediate, "_fits", lambda *a, **k: False)
    monkeypatch.setattr(intermediate, "_affordable_window", window)
    inter = compute_intermediate(graph, box, method="crown")
    assert any(bool(((iv.upper - iv.lower) > (whole.bounds[n].upper - whole.bounds[n].lower)
                     + TOL).any()) for n, iv in inter.bounds.items())  # (the rows stopped)
    assert any(cut > 0 for _, cut in windows)  # (rows that stopped before the input)
    _assert_encloses(graph, box, inter)
    plain = compute_intermediate(graph, box, method="ibp")
    gain = [float((plain.bounds[n].upper - plain.bounds[n].lower).sum()
                  - (iv.upper - iv.lower).sum()) for n, iv in inter.bounds.items()]
    assert min(gain) >= -TOL and max(gain) > 0


def test_forward_functions_of_a_scalar_value_concretize():
    """A value of shape () (a ReduceMean over every axis) has forward weights [B, d]; its
    bounds are the box extremes of the linear functions (an IndexError before: campaign case
    45:128)."""
    from bounds.engine.forward_linear import LinearFunctions

    g = torch.Generator().manual_seed(3)
    b, d = 2, 5
    lw = torch.randn(b, d, generator=g, dtype=torch.float64)
    uw = lw + torch.rand(b, d, generator=g, dtype=torch.float64)
    lb, ub = torch.zeros(b, dtype=torch.float64), torch.ones(b, dtype=torch.float64)
    lo = -torch.rand(b, d, generator=g, dtype=torch.float64)
    hi = torch.rand(b, d, generator=g, dtype=torch.float64)
    out = LinearFunctions(lw, lb, uw, ub).concretize(Interval(lo, hi))
    assert out.lower.shape == (b,) and out.upper.shape == (b,)
    want_lo = (torch.where(lw > 0, lw * lo, lw * hi)).sum(1) + lb
    want_hi = (torch.where(uw > 0, uw * hi, uw * lo)).sum(1) + ub
    assert torch.allclose(out.lower, want_lo) and torch.allclose(out.upper, want_hi)
    assert bool((out.lower <= want_lo + 1e-12).all()) and bool((out.upper >= want_hi - 1e-12).all())


def _float32_hull_box(shape, seed: int, free_share: float = 0.2) -> Interval:
    """Most coordinates pinned to a value no float32 represents, widened to its two float32
    neighbours as ``InputRegion.bound_box`` does; the rest free with radius 0.3."""
    from verifier.spec.types import float32_hull

    rng = np.random.default_rng(seed)
    centre = np.round(rng.normal(size=(1, *shape)), 3) + 1e-9  # (decimals: not float32)
    width = np.where(rng.random((1, *shape)) < free_share, 0.3, 0.0)
    lower, upper = float32_hull(centre - width, centre + width)
    return Interval(torch.as_tensor(lower), torch.as_tensor(upper))


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_neighbours_are_pinned_not_free(seed):
    """A coordinate widened only to its float32 neighbours is pinned: forward mode carries
    the free coordinates alone (all 36 counted as free before), its input functions still
    enclose the box (the pinned ends as constants), and its bounds enclose sampled points."""
    graph = maxpool_cnn(seed, deep=True)
    box = _float32_hull_box((1, 1, 6, 6), seed)
    widths = (box.upper - box.lower).flatten()
    assert bool((widths > 0).all())  # every coordinate has some width
    free = free_coordinates(box)
    assert torch.equal(free, torch.nonzero(widths > 0.1)[:, 0])
    funcs, zbox = free_input_functions(box, (1, 1, 6, 6), free)
    again = funcs.concretize(zbox)
    assert torch.allclose(again.lower, box.lower, rtol=0, atol=1e-12)
    assert torch.allclose(again.upper, box.upper, rtol=0, atol=1e-12)
    pinned = (widths < 0.1).reshape(box.lower.shape)
    assert torch.equal(again.lower[pinned], box.lower[pinned])  # (constants: exact ends)
    assert torch.equal(again.upper[pinned], box.upper[pinned])
    inter = compute_intermediate(graph, box, method="forward")
    _assert_encloses(graph, box, inter)


def test_final_pass_stops_at_once_where_its_rows_cannot_end_in_time(monkeypatch):
    """Spec rows whose backward pass, priced at the measured rate, cannot end before the
    engines' deadline: the pass raises DeadlineExceeded before its first row (it ran into
    the deadline before, holding the time the rest of the run needed)."""
    import bounds.engine.spec_bounds as spec_bounds
    from bounds.engine.spec_bounds import BoundOptions, bound_spec

    graph = random_mlp([6, 16, 16, 10], seed=2)
    box = _box((1, 6), 1, 0.2, 2)
    coef = torch.randn(1, 9, 10, dtype=F64)
    rhs = torch.zeros(1, 9, dtype=F64)
    passes = spy(monkeypatch, spec_bounds, "backward_bound")
    options = BoundOptions(method="crown", intermediate="ibp")
    with engine_deadline(10.0 + time.monotonic()):
        intermediate.rates(PassCache())[intermediate._rate_key(graph)] = 1e6  # s per unit
        with pytest.raises(DeadlineExceeded):
            bound_spec(graph, box, coef, rhs, options)
    assert not passes
    with engine_deadline(10.0 + time.monotonic()):  # (a rate that fits: the pass runs)
        intermediate.rates(PassCache())[intermediate._rate_key(graph)] = 1e-12
        lower = bound_spec(graph, box, coef, rhs, options).lower
    assert passes and bool(torch.isfinite(lower).all())
