"""Engine options used by branch-and-bound: ``backward_bound(keep=...)``,
``compute_intermediate(reuse_given=<set | per-domain mapping>)`` and ``Intermediates.infeasible``;
results are values (a pass leaves nothing behind for the next)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import Intermediates, PassCache
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64
SIZES = [4, 10, 10, 10, 3]
RELU_VALUES = ["lin0", "lin1", "lin2"]  # inputs of act0..act2 in tests.bounds.nets.mlp


def _setup(seed: int, batch: int = 3):
    graph = random_mlp(SIZES, seed=seed)
    rng = np.random.default_rng(seed)
    center = torch.as_tensor(rng.normal(size=(batch, 1, SIZES[0])), dtype=torch.float32)
    box = Interval((center - 0.5).to(F64), (center + 0.5).to(F64))  # float32-exact ends
    return graph, box


def _samples(box: Interval, n: int, seed: int) -> torch.Tensor:
    """[B, n, 1, d] float32 points inside each domain's box (corners included)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box.lower.unsqueeze(1), box.upper.unsqueeze(1)
    u = torch.rand((box.lower.shape[0], n, *box.lower.shape[1:]), generator=gen, dtype=F64)
    u[:, :32] = (u[:, :32] > 0.5).to(F64)
    return torch.minimum(torch.maximum((lo + (hi - lo) * u).float(), lo.float()), hi.float())


def _all_values(graph, xs: torch.Tensor) -> dict[str, torch.Tensor]:
    b, n = xs.shape[:2]
    vals = run_graph(graph, xs.reshape(b * n, *xs.shape[2:]), keep_all=True)
    return {k: v.double().reshape(b, n, *v.shape[1:]) for k, v in vals.items()}


def _state(graph, box, given=None, reuse=False, cache=None) -> Intermediates:
    with torch.no_grad():
        return compute_intermediate(graph, box, given, "crown", reuse_given=reuse, cache=cache)


@pytest.mark.parametrize("seed", range(3))
def test_keep_coef_matches_the_pass_and_leaves_the_bound_unchanged(seed):
    graph, box = _setup(seed)
    cache = PassCache()
    state = _state(graph, box, cache=cache)
    out = graph.outputs[0].name
    coef = torch.as_tensor(np.random.default_rng(seed).normal(size=(3, 2, 1, 3)), dtype=F64)
    with torch.no_grad():
        plain = backward_bound(state, out, coef).lower
        res = backward_bound(state, out, coef, keep_input=True,
                             keep={"act2", "lin1", "act1", "x"}, cache=cache)
    kept = res.lower
    assert torch.equal(plain, kept)
    k = res.kept_coef
    assert set(k) == {"act2", "lin1", "act1", "x"}
    # The last Linear passes coef exactly: A(act2) = coef @ W3.
    w3 = torch.as_tensor(graph.node("lin3").consts[1], dtype=F64)
    assert torch.allclose(k["act2"], coef @ w3)
    # Through a Relu: lower slope where A >= 0, upper slope where A < 0.
    rel = cache.relaxations(state.bounds)["act1"]
    a = k["act1"]
    slope = torch.where(a >= 0, rel.lower_slope.unsqueeze(1), rel.upper_slope.unsqueeze(1))
    assert torch.allclose(k["lin1"], a * slope)
    assert torch.equal(k["x"], res.input_coef)
    # The bound these coefficients give encloses sampled outputs.
    xs = _samples(box, 400, seed)
    ys = _all_values(graph, xs)[out]
    values = torch.einsum("bsij,bnij->bns", coef, ys)
    assert torch.all(values.min(1).values >= kept - 1e-9)


def test_results_are_values_of_their_own_pass():
    """A pass returns what it was asked for and nothing else; a later pass changes nothing in
    an earlier result (no state left behind), and a cache made for other bounds is not used."""
    graph, box = _setup(0)
    cache = PassCache()
    state = _state(graph, box, cache=cache)
    coef = torch.ones((3, 1, 1, 3), dtype=F64)
    with torch.no_grad():
        first = backward_bound(state, graph.outputs[0].name, coef, keep={"act0"}, cache=cache)
        second = backward_bound(state, "lin1", torch.ones((3, 1, 1, 10), dtype=F64),
                                cache=cache)
        other = _state(graph, Interval(box.lower - 1, box.upper + 1))
        wide = backward_bound(other, graph.outputs[0].name, coef, cache=cache).lower
        fresh = backward_bound(other, graph.outputs[0].name, coef).lower
    assert set(first.kept_coef) == {"act0"} and first.input_coef is None
    assert dict(second.kept_coef) == {} and second.input_coef is None
    assert torch.equal(wide, fresh)


@pytest.mark.parametrize("seed", range(3))
def test_reuse_subset_equals_full_recompute_when_nothing_changed(seed, monkeypatch):
    # Both sides of every position: sign probes pick their first side from the interval
    # they start from, which the given bounds change (test_sign_probes.py covers them).
    monkeypatch.setattr(intermediate, "SIGN_PROBES", False)
    graph, box = _setup(seed)
    full = _state(graph, box)
    given = {v: full.bounds[v] for v in RELU_VALUES}
    per_domain = {"lin1": torch.tensor([True, False, True]), "lin2": torch.tensor([False] * 3)}
    for reuse in ({"lin0"}, {"lin0", "lin2"}, per_domain, True, False):
        again = _state(graph, box, given, reuse)
        for name, iv in full.bounds.items():
            # (a pass over a subset of the domains runs the matrix products at other shapes,
            # whose kernels may sum in another order: an ulp apart on AVX-512 machines)
            for got, want in ((again.bounds[name].lower, iv.lower),
                              (again.bounds[name].upper, iv.upper)):
                torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14,
                                           msg=lambda m, r=reuse, n=name: f"{r} {n}: {m}")


def _split(bounds: dict, value: str, domain: int, active: bool) -> dict:
    """Given bounds with one unstable neuron of ``value`` in ``domain`` fixed."""
    given = {v: Interval(iv.lower.clone(), iv.upper.clone()) for v, iv in bounds.items()}
    iv = given[value]
    lo, up = iv.lower[domain].flatten(), iv.upper[domain].flatten()
    pos = int(torch.nonzero((lo < 0) & (up > 0))[0])
    if active:
        lo[pos] = 0.0
    else:
        up[pos] = 0.0
    return given, pos


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("active", [True, False])
def test_recomputing_only_downstream_of_a_split_equals_full_recompute(seed, active):
    graph, box = _setup(seed)
    parent = _state(graph, box)
    given, pos = _split({v: parent.bounds[v] for v in RELU_VALUES}, "lin1", 1, active)
    full = _state(graph, box, given, reuse=False)
    # Upstream of the split (and the split value itself) reused in every domain; downstream
    # recomputed only in the split domain.
    mask = {"lin0": torch.ones(3, dtype=torch.bool), "lin1": torch.ones(3, dtype=torch.bool),
            "lin2": torch.tensor([True, False, True])}
    middle = _state(graph, box, given, reuse=mask)
    for name in RELU_VALUES:
        for side in ("lower", "upper"):
            a, b = getattr(middle.bounds[name], side), getattr(full.bounds[name], side)
            assert torch.allclose(a[1], b[1], rtol=0, atol=1e-12), (name, side)
            # Domains without a new split keep the parent's bounds.
            p = getattr(parent.bounds[name], side)
            assert torch.equal(a[[0, 2]], p[[0, 2]])
    # Sound: sampled points of the split domain (those meeting the split) lie inside.
    xs = _samples(box, 3000, seed + 7)
    vals = _all_values(graph, xs)
    z = vals["lin1"][1].flatten(1)[:, pos]
    keep = z >= 0 if active else z <= 0
    assert bool(keep.any())
    for name, iv in middle.bounds.items():
        v = vals[name][1][keep]
        assert torch.all(v >= iv.lower[1] - 1e-9) and torch.all(v <= iv.upper[1] + 1e-9), name


def test_infeasible_domains_are_reported_per_domain():
    graph, box = _setup(1)
    parent = _state(graph, box)
    given = {v: Interval(parent.bounds[v].lower.clone(), parent.bounds[v].upper.clone())
             for v in RELU_VALUES}
    # Domain 2: a lower bound above the value's largest possible upper bound.
    given["lin1"].lower[2, 0, 0] = parent.bounds["lin1"].upper[2, 0, 0] + 1.0
    state = _state(graph, box, given, reuse={"lin0"})
    assert state.infeasible.tolist() == [False, False, True]
    assert not bool(parent.infeasible.any())


@pytest.mark.parametrize("seed", range(3))
def test_alpha_intermediate_bounds_enclose_samples(seed):
    graph, box = _setup(seed)
    crown = _state(graph, box)
    with torch.no_grad():
        alpha = compute_intermediate(graph, box, None, "crown", alpha_iterations=10)
    vals = _all_values(graph, _samples(box, 1000, seed))
    # lin1's upstream intervals are the same in both, so alpha starts from CROWN's bound there;
    # deeper values see other (tighter) intervals, where CROWN's default slopes can differ.
    for side, sign in (("lower", 1), ("upper", -1)):
        a, c = getattr(alpha.bounds["lin1"], side), getattr(crown.bounds["lin1"], side)
        assert torch.all(sign * (a - c) >= -1e-12)
    for name, iv in alpha.bounds.items():
        v = vals[name]
        assert torch.all(v >= iv.lower.unsqueeze(1) - 1e-9), name
        assert torch.all(v <= iv.upper.unsqueeze(1) + 1e-9), name
