"""Engine invariants through window max, products of perturbed values and softmax: every method
encloses sampled outputs (and every intermediate value), CROWN is never looser than IBP on the
final bound and alpha never looser than CROWN, and CROWN's backward pass really goes through
these ops (coefficients reach the input instead of being concretised at the op)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.rules.softmax import expand_softmax
from bounds.types import Interval
from tests.bounds import structured_nets as nets

F64 = torch.float64
NETS = {
    "maxpool": lambda s: nets.maxpool_cnn(s),
    "maxpool-deep": lambda s: nets.maxpool_cnn(s, deep=True),
    "reducemax": nets.reducemax_net,
    "products": nets.product_net,
    "attention": nets.attention_net,
    "softmax": nets.softmax_net,
    "softmax-middle-axis": lambda s: nets.softmax_net(s, axis_last=False),
    "softmax-output": nets.softmax_classifier,
}


def _box(graph, seed: int, width: float) -> Interval:
    rng = np.random.default_rng(seed)
    shape = graph.inputs[0].shape
    c = rng.normal(size=shape)
    lo = torch.as_tensor(c - width, dtype=torch.float32).to(F64).unsqueeze(0)
    hi = torch.as_tensor(c + width, dtype=torch.float32).to(F64).unsqueeze(0)
    return Interval(lo, hi)


def _sample(box: Interval, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box.lower[0], box.upper[0]
    u = torch.rand((n, *lo.shape), generator=gen, dtype=F64)
    u[:64] = (u[:64] > 0.5).to(F64)
    pts = (lo + (hi - lo) * u).float()
    return torch.minimum(torch.maximum(pts, lo.float()), hi.float())


def _spec(graph, seed: int):
    rng = np.random.default_rng(seed)
    n_out = int(np.prod(graph.outputs[0].shape))
    coef = torch.as_tensor(rng.normal(size=(1, 4, n_out)), dtype=F64)
    return coef, torch.zeros((1, 4), dtype=F64)


def _bounds(graph, box, coef, rhs):
    return {m: bound_spec(graph, box, coef, rhs, BoundOptions(method=m, alpha_iterations=15))
            for m in ("ibp", "crown", "alpha")}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("net", list(NETS))
def test_methods_enclose_samples_and_are_ordered(net, seed):
    graph = NETS[net](seed)
    box = _box(graph, seed, width=0.3)
    coef, rhs = _spec(graph, seed)
    res = _bounds(graph, box, coef, rhs)
    xs = _sample(box, 3000, seed)
    values = run_graph(graph, xs, keep_all=True)
    ys = values[graph.outputs[0].name].reshape(len(xs), -1).double() @ coef[0].T
    for method, r in res.items():
        assert torch.all(ys.min(0).values >= r.lower[0]), (method, ys.min(0).values, r.lower)
        for name, v in values.items():
            iv = r.intermediate[name]
            v = v.double()
            assert torch.all(v >= iv.lower - 1e-12) and torch.all(v <= iv.upper + 1e-12), name
    assert torch.all(res["crown"].lower >= res["ibp"].lower)
    assert torch.all(res["alpha"].lower >= res["crown"].lower)


@pytest.mark.parametrize("net", list(NETS))
def test_crown_passes_through_the_op(net):
    graph = expand_softmax(NETS[net](0))
    box = _box(graph, 0, width=0.3)
    coef, _ = _spec(graph, 0)
    with torch.no_grad():
        inter = compute_intermediate(graph, box, None, "crown")
        full = coef.reshape(1, 4, *graph.outputs[0].shape)
        res = backward_bound(inter, graph.outputs[0].name, full, keep_input=True)
    assert res.input_coef is not None and bool(res.input_coef.abs().sum() > 0)


@pytest.mark.parametrize("net", ["maxpool", "maxpool-deep", "products", "attention", "softmax"])
def test_crown_tighter_than_ibp_on_small_boxes(net):
    """Across seeds, CROWN's bounds beat IBP's on average (the relaxations carry information)."""
    gain = []
    for seed in range(3):
        graph = NETS[net](seed)
        box = _box(graph, seed, width=0.05)
        coef, rhs = _spec(graph, seed)
        ibp = bound_spec(graph, box, coef, rhs, BoundOptions(method="ibp")).lower
        crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
        gain.append(float((crown - ibp).mean()))
    assert np.mean(gain) > 0, gain


@pytest.mark.parametrize("net", ["softmax", "softmax-middle-axis", "attention"])
def test_softmax_expansion_computes_softmax(net):
    graph = NETS[net](1)
    expanded = expand_softmax(graph)
    assert "Softmax" not in expanded.op_types and expand_softmax(graph) is expanded
    xs = _sample(_box(graph, 1, 2.0), 200, 1).double()
    want = run_graph(graph, xs)[0]
    got = run_graph(expanded, xs)[0]
    assert torch.allclose(want, got, rtol=1e-12, atol=1e-12)


def test_wide_softmax_inputs_stay_sound():
    """Differences beyond exp's range: Exp cannot be relaxed there; bounds stay sound."""
    graph = nets.softmax_net(2)
    box = _box(graph, 2, width=400.0)
    coef, rhs = _spec(graph, 2)
    res = _bounds(graph, box, coef, rhs)
    xs = _sample(box, 1000, 2)
    ys = run_graph(graph, xs)[0].reshape(len(xs), -1).double() @ coef[0].T
    for r in res.values():
        assert torch.all(ys.min(0).values >= r.lower[0])


@pytest.mark.parametrize("width", [0.05, 1.0, 3.0])
@pytest.mark.parametrize("net", list(NETS))
def test_crown_not_looser_than_concretising_at_the_new_ops(net, width):
    """On the final bound, CROWN is (up to rounding allowances) never looser than CROWN that
    stops at the window max / product / softmax nodes and uses their intervals (what the
    engine did before these ops had relaxations): wide domains, where planes are loose,
    included."""
    from bounds.engine.spec_bounds import structured_relaxations

    for seed in range(2):
        graph = NETS[net](seed)
        box = _box(graph, seed, width)
        coef, rhs = _spec(graph, seed)
        with torch.no_grad():
            inter = compute_intermediate(graph, box, None, "crown")
            full = coef.reshape(1, 4, *graph.outputs[0].shape)
            old = backward_bound(inter, graph.outputs[0].name, full,
                                 concretize_at=structured_relaxations(graph)).lower
        new = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
        assert torch.all(new >= old - 1e-3 * (1 + old.abs())), (new, old)


def test_linear_after_linear_is_refined():
    """Two affine maps in a row: IBP is not exact for the second, so CROWN refines it (before a
    Relu) and its interval comes out tighter than IBP's."""
    from bounds.engine.ibp import ibp_bounds
    from tests.bounds.nets import mlp

    rng = np.random.default_rng(3)
    w0, w1, w2 = rng.normal(size=(6, 3)), rng.normal(size=(5, 6)), rng.normal(size=(2, 5))
    graph = mlp([(w0, np.zeros(6)), (w1, np.zeros(5)), (w2, np.zeros(2))], activation="Relu")
    nodes = [n for n in graph.nodes if n.name != "act0"]  # lin0 -> lin1 directly
    nodes[1] = type(nodes[1])("lin1", "Linear", ("lin0", None, None), (1, 5), {},
                              dict(nodes[1].consts))
    graph = type(graph)(graph.inputs, graph.outputs, tuple(nodes))
    box = Interval(torch.full((1, 1, 3), -0.5, dtype=F64), torch.full((1, 1, 3), 0.5, dtype=F64))
    with torch.no_grad():
        inter = compute_intermediate(graph, box, None, "crown")
    ibp = ibp_bounds(graph, box)["lin1"]
    crown = inter.bounds["lin1"]
    assert torch.all(crown.lower >= ibp.lower) and torch.all(crown.upper <= ibp.upper)
    assert bool((crown.upper - crown.lower < ibp.upper - ibp.lower - 1e-6).any())


def test_softmax_output_bound_uses_the_simplex():
    """Specs on probabilities: y_0 - y_1 and y_2 - y_3 are bounded tighter than by the output
    intervals alone (sum y = 1 rules out most corners of the box)."""
    gains = []
    for seed in range(3):
        graph = nets.softmax_classifier(seed)
        box = _box(graph, seed, width=0.5)
        coef = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]]], dtype=F64)
        rhs = torch.zeros((1, 2), dtype=F64)
        ibp = bound_spec(graph, box, coef, rhs, BoundOptions(method="ibp")).lower
        crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
        ys = run_graph(graph, _sample(box, 2000, seed))[0].reshape(-1, 4).double() @ coef[0].T
        assert torch.all(ys.min(0).values >= crown[0])
        gains.append(float((crown - ibp).min()))
    assert min(gains) >= 0 and max(gains) > 1e-3, gains
