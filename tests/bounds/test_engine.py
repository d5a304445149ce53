"""Engine invariants on random small networks, and hand-computed tightness examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.ibp import ibp_bounds
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import mlp, random_mlp

F64 = torch.float64


def _box(lo, hi, shape):
    """A box with float32-representable ends, so float32 sample points stay inside it."""
    lo = torch.as_tensor(lo, dtype=torch.float32).to(F64).reshape(1, *shape)
    hi = torch.as_tensor(hi, dtype=torch.float32).to(F64).reshape(1, *shape)
    return Interval(lo, hi)


def _sample(box: Interval, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box.lower[0], box.upper[0]
    u = torch.rand((n, *lo.shape), generator=gen, dtype=F64)
    pts = (lo + (hi - lo) * u).float()
    pts = torch.minimum(torch.maximum(pts, lo.float()), hi.float())
    corners = torch.where(torch.rand((64, *lo.shape), generator=gen) < 0.5, lo, hi)
    return torch.cat([pts, corners.float()])


def _raw_lower(graph, box, coef, method, intermediate="crown"):
    """Final lower bound of coef @ y by one method, without bound_spec's max with IBP."""
    with torch.no_grad():
        inter = compute_intermediate(graph, box, None, intermediate)
    out = graph.outputs[0]
    full = coef.reshape(1, coef.shape[1], *out.shape)
    if method == "ibp":
        o = inter.bounds[out.name]
        c = coef.flatten(2)
        return (c.clamp(min=0) * o.lower.flatten(1).unsqueeze(1)
                + c.clamp(max=0) * o.upper.flatten(1).unsqueeze(1)).sum(-1)
    with torch.no_grad():
        return backward_bound(inter, out.name, full).lower


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
@pytest.mark.parametrize("intermediate", ["crown", "forward"])
def test_every_method_encloses_sampled_outputs(seed, method, intermediate):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 6))] + [int(rng.integers(3, 12)) for _ in range(3)] + [4]
    graph = random_mlp(sizes, seed=seed)
    center = rng.normal(size=sizes[0])
    width = rng.uniform(0.01, 1.0)
    box = _box(center - width, center + width, (1, sizes[0]))
    coef = torch.as_tensor(rng.normal(size=(1, 3, 4)), dtype=F64)
    rhs = torch.zeros((1, 3), dtype=F64)
    res = bound_spec(graph, box, coef, rhs, BoundOptions(method=method,
                                                          intermediate=intermediate))
    xs = _sample(box, 2000, seed)
    ys = run_graph(graph, xs)[0].reshape(len(xs), -1).double()
    values = ys @ coef[0].T
    assert torch.all(values.min(0).values >= res.lower[0]), (values.min(0).values, res.lower)
    # Intermediate bounds enclose every value too.
    allv = run_graph(graph, xs, keep_all=True)
    for name, interval in res.intermediate.items():
        v = allv[name].double()
        assert torch.all(v >= interval.lower - 1e-12) and torch.all(v <= interval.upper + 1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_alpha_never_looser_than_crown_never_looser_than_ibp(seed):
    rng = np.random.default_rng(100 + seed)
    graph = random_mlp([3, 10, 10, 10, 2], seed=100 + seed)
    c = rng.normal(size=3)
    box = _box(c - 0.5, c + 0.5, (1, 3))
    coef = torch.as_tensor(rng.normal(size=(1, 2, 2)), dtype=F64)
    rhs = torch.zeros((1, 2), dtype=F64)
    ibp, crown, alpha = (bound_spec(graph, box, coef, rhs, BoundOptions(method=m)).lower
                         for m in ("ibp", "crown", "alpha"))
    # Raw CROWN can be looser than IBP on some rows; the engine keeps the better of the two,
    # and alpha-CROWN starts from CROWN's slopes and keeps its best iterate.
    assert torch.all(crown >= ibp)
    assert torch.all(alpha >= crown)


def test_tightness_single_relu_by_hand():
    # y = relu(x1 - x2) on x in [-1, 1]^2: pre-activation z in [-2, 2].
    w1 = np.array([[1.0, -1.0]]), np.zeros(1)
    w2 = np.array([[1.0]]), np.zeros(1)
    graph = mlp([w1, w2])
    box = _box([-1, -1], [1, 1], (1, 2))
    upper_coef = torch.tensor([[[-1.0]]], dtype=F64)  # lower bound of -y = -(upper bound of y)
    res = bound_spec(graph, box, upper_coef, torch.zeros((1, 1), dtype=F64),
                     BoundOptions(method="crown"))
    # CROWN upper plane: y <= (z + 2) / 2 -> max over the box is 2 (exact, up to margins).
    assert abs(-res.lower.item() - 2.0) < 1e-5
    lower_coef = torch.tensor([[[1.0]]], dtype=F64)
    res = bound_spec(graph, box, lower_coef, torch.zeros((1, 1), dtype=F64),
                     BoundOptions(method="crown"))
    # lower plane slope 1 (u >= -l): y >= z, min over box -2; IBP gives 0, and we keep the max.
    assert abs(res.lower.item() - 0.0) < 1e-5


def test_tightness_two_layer_crown_beats_ibp_by_hand():
    # z = [x, -x], y = relu(z1) + relu(z2) = |x| on x in [-1, 1]; y - 0.5*... upper bound:
    # IBP: y <= 1 + 1 = 2; CROWN: each relu <= (z + 1) / 2, sum = 1.
    w1 = np.array([[1.0], [-1.0]]), np.zeros(2)
    w2 = np.array([[1.0, 1.0]]), np.zeros(1)
    graph = mlp([w1, w2])
    box = _box([-1], [1], (1, 1))
    coef = torch.tensor([[[-1.0]]], dtype=F64)
    ibp = _raw_lower(graph, box, coef, "ibp")
    crown = _raw_lower(graph, box, coef, "crown")
    assert abs(-ibp.item() - 2.0) < 1e-5
    assert abs(-crown.item() - 1.0) < 1e-5


def test_float32_rounding_margin_near_the_bound():
    """A bound that is exact in real arithmetic is widened enough for float32 evaluation."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(1, 400)) * 100
    graph = mlp([(w, np.zeros(1)), (np.eye(1), np.zeros(1))], activation="Relu")
    x0 = rng.normal(size=400).astype(np.float32).astype(np.float64)
    box = _box(x0, x0, (1, 400))  # a single point: IBP/CROWN are exact in real arithmetic
    coef = torch.tensor([[[1.0]]], dtype=F64)
    res = bound_spec(graph, box, coef, torch.zeros((1, 1), dtype=F64),
                     BoundOptions(method="crown"))
    exact = max((w @ x0).item(), 0.0)
    y32 = run_graph(graph, torch.tensor(x0, dtype=torch.float32).reshape(1, 1, 400))[0].item()
    assert res.lower.item() <= y32
    assert res.lower.item() <= exact
    # ... yet the margin stays small relative to the magnitudes involved.
    assert exact - res.lower.item() < 1e-3 * (np.abs(w) @ np.abs(x0)).item()


def test_ibp_bounds_cover_all_values():
    graph = random_mlp([4, 8, 8, 3], seed=3)
    box = _box(-np.ones(4), np.ones(4), (1, 4))
    bounds = ibp_bounds(graph, box)
    xs = _sample(box, 500, 3)
    values = run_graph(graph, xs, keep_all=True)
    for name, interval in bounds.items():
        assert torch.all(values[name].double() >= interval.lower)
        assert torch.all(values[name].double() <= interval.upper)


def test_batched_domains_match_single_domain_bounds():
    graph = random_mlp([3, 8, 8, 2], seed=5)
    los = torch.tensor([[-1.0, 0.0, 0.5], [0.0, -0.5, -1.0]], dtype=F64)
    his = los + 0.4
    coef = torch.tensor([[[1.0, -1.0]]], dtype=F64)
    rhs = torch.zeros((1, 1), dtype=F64)
    batched = bound_spec(graph, Interval(los.reshape(2, 1, 3), his.reshape(2, 1, 3)), coef, rhs)
    for i in range(2):
        single = bound_spec(graph, Interval(los[i].reshape(1, 1, 3), his[i].reshape(1, 1, 3)),
                            coef, rhs)
        # Batching refines the union of unstable neurons, a superset of the single case's.
        assert batched.lower[i].item() >= single.lower[0].item() - 1e-9
        xs = _sample(Interval(los[i].reshape(1, 1, 3), his[i].reshape(1, 1, 3)), 500, i)
        ys = run_graph(graph, xs)[0].reshape(len(xs), -1).double()
        assert torch.all(ys @ coef[0].T >= batched.lower[i])


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", "Tanh"])
def test_alpha_on_intermediate_values_is_sound(activation):
    graph = random_mlp([4, 12, 12, 12, 3], seed=11, activation=activation)
    box = _box(-np.ones(4) * 0.8, np.ones(4) * 0.8, (1, 4))
    coef = torch.tensor([[[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]], dtype=F64)
    rhs = torch.zeros((1, 2), dtype=F64)
    plain = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha"))
    deep = bound_spec(graph, box, coef, rhs,
                      BoundOptions(method="alpha", intermediate_alpha_iterations=5))
    xs = _sample(box, 3000, 11)
    values = run_graph(graph, xs, keep_all=True)
    ys = values[graph.outputs[0].name].reshape(len(xs), -1).double() @ coef[0].T
    assert torch.all(ys.min(0).values >= deep.lower[0])
    for name, interval in deep.intermediate.items():
        v = values[name].double()
        assert torch.all(v >= interval.lower - 1e-12) and torch.all(v <= interval.upper + 1e-12)
    # Not asserted: deep <= plain elementwise. Tighter upstream bounds change the default
    # relaxations downstream, and CROWN is not monotone in them for S-shaped functions.
    assert plain.lower.shape == deep.lower.shape


def test_alpha_with_every_relu_stable_returns_the_crown_bound():
    # All pre-activations positive on the box: no alpha reaches the bound (regression: the
    # optimiser used to call backward() on a bound without a gradient).
    w1 = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([5.0, 5.0])
    w2 = np.array([[1.0, -1.0]]), np.zeros(1)
    graph = mlp([w1, w2])
    box = _box([-1, -1], [1, 1], (1, 2))
    coef = torch.tensor([[[1.0]]], dtype=F64)
    rhs = torch.zeros((1, 1), dtype=F64)
    alpha = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha")).lower
    crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    assert abs(alpha.item() - crown.item()) < 1e-9
    assert abs(crown.item() + 2.0) < 1e-5
