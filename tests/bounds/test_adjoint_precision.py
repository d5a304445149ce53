"""Float32 adjoints of Conv and ConvTranspose inside float64 passes
(bounds/engine/adjoint_precision.py): the float32 adjoint stays within its error bound
gamma(k + 3) |A| |W| (Linear's too, though passes keep it in float64), k is the most terms of an
entry, rows with m < k nonzeros stay within gamma(m + 3) |A| |W|, and passes that take float32
adjoints (dense and window coefficients, alpha-CROWN, several domains) enclose sampled points and
never claim more than the float64 pass, even with adjoint errors at the full size of the bound."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import bounds.engine.adjoint_precision as adjoint_precision
import bounds.engine.crown as crown
from bounds.engine import patches
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Node
from bounds.registry import rules
from bounds.rules.linear import forward_products
from bounds.types import Interval
from tests.bounds.test_conv_patches import CONVS, NETS, _box, _conv_node, _forward_all

F64 = torch.float64


def _conv_t_node(seed=0):
    """ConvTranspose 3 -> 4 channels, strides (2, 1), dilations (1, 2), asymmetric pads,
    output padding."""
    rng = np.random.default_rng(seed)
    attrs = {"strides": (2, 1), "dilations": (1, 2), "pads": (1, 0, 0, 1), "group": 1,
             "output_padding": (1, 0)}
    w = rng.standard_normal((3, 4, 3, 2))
    # out = (in - 1) * stride - pads + dilation * (k - 1) + output_padding + 1
    out = ((5 - 1) * 2 - 1 + 2 + 1 + 1, (6 - 1) * 1 - 1 + 2 * 1 + 0 + 1)
    node = Node("convt", "ConvTranspose", ("x", None, None), (1, 4, *out), attrs,
                {1: w, 2: rng.standard_normal(4)})
    return node, (1, 3, 5, 6)


def _linear_node(seed=0):
    rng = np.random.default_rng(seed)
    node = Node("lin", "Linear", ("x", None, None), (1, 37), {},
                {1: rng.standard_normal((37, 23)).astype(np.float32),
                 2: rng.standard_normal(37).astype(np.float32)})
    return node, (1, 23)


def _grouped_conv_t_node(seed=0):
    """A generator's layer: ConvTranspose 4 -> 6 channels in 2 groups, kernel 4, stride 2."""
    rng = np.random.default_rng(seed)
    attrs = {"strides": (2, 2), "dilations": (1, 1), "pads": (1, 1, 1, 1), "group": 2,
             "output_padding": (0, 0)}
    node = Node("convt", "ConvTranspose", ("x", None, None), (1, 6, 10, 10), attrs,
                {1: rng.standard_normal((4, 3, 4, 4)), 2: rng.standard_normal(6)})
    return node, (1, 4, 5, 5)


NODES = [functools.partial(_conv_node, case) for case in CONVS] + [
    _conv_t_node, _grouped_conv_t_node, _linear_node]


def _adjoint(node, in_shape, coef, weight_abs=False, dtype=F64):
    w = torch.as_tensor(node.consts[1]).to(dtype)
    x = torch.zeros((coef.shape[0], *in_shape), dtype=dtype)
    coefs, _ = rules().get(node.op).backward(
        node, coef.to(dtype), [Interval(x, x), w.abs() if weight_abs else w])
    return coefs[0].to(F64)


@pytest.mark.parametrize("make", NODES)
def test_float32_adjoint_is_within_its_error_bound(make):
    """Coefficients spread over six orders of magnitude with random signs (cancellation)."""
    node, in_shape = make()
    g = torch.Generator().manual_seed(0)
    shape = (2, 6, *node.shape)
    coef = torch.randn(shape, generator=g, dtype=F64) * 10 ** (6 * torch.rand(shape,
                                                                           generator=g))
    exact = _adjoint(node, in_shape, coef)
    low = _adjoint(node, in_shape, coef, dtype=torch.float32)
    bound = adjoint_precision.adjoint_gamma(node) * _adjoint(node, in_shape, coef.abs(), True)
    assert bool(((exact - low).abs() <= bound).all())
    assert bool(((exact - low).abs() > 0).any())  # float32 really rounded here


@pytest.mark.parametrize("make", NODES)
def test_adjoint_length_counts_the_terms_of_every_entry(make):
    """An all-ones adjoint of all-ones weights counts each entry's products: k is their
    maximum (strided Convs: the taps of one residue class, not the whole kernel)."""
    node, in_shape = make()
    ones = Node(node.name, node.op, node.inputs, node.shape, node.attrs,
                {**node.consts, 1: np.ones_like(node.consts[1])})
    counts = _adjoint(ones, in_shape, torch.ones((1, 1, *node.shape), dtype=F64))
    assert counts.max() == adjoint_precision.adjoint_length(node)


@pytest.mark.parametrize("make", NODES)
def test_forward_length_counts_the_terms_of_every_output(make):
    """All-ones inputs through all-ones weights count each output's products: forward_products
    (the rounding error's and the cost's reduction length) is their maximum. A ConvTranspose
    output sums Cin/g channels times the taps its stride lets meet it (was Cin x Cout x k)."""
    node, in_shape = make()
    x = torch.ones(in_shape, dtype=F64)
    w = torch.ones(node.consts[1].shape, dtype=F64)
    counts = rules().get(node.op).forward(node, [x, w])
    assert counts.max() == forward_products(node.op, node.consts[1].shape, node.attrs)


@pytest.mark.parametrize("make", NODES)
@pytest.mark.parametrize("nonzero", [1, 2, 5])
def test_sparse_rows_stay_within_their_count_bound(make, nonzero):
    """Rows with m nonzero coefficients (six orders of magnitude, random signs): the float32
    adjoint's error stays within gamma(min(k, m) + 3) |A| |W| (``row_scale``), and the scale
    is 1 exactly where m >= k."""
    node, in_shape = make()
    g = torch.Generator().manual_seed(nonzero)
    b, s, n = 2, 40, int(np.prod(node.shape))
    coef = torch.zeros((b * s, n), dtype=F64)
    for row in coef:
        at = torch.randperm(n, generator=g)[:nonzero]
        row[at] = torch.randn(nonzero, generator=g, dtype=F64) * 10 ** (
            6 * torch.rand(nonzero, generator=g, dtype=F64))
    coef = coef.reshape(b, s, *node.shape)
    k = adjoint_precision.adjoint_length(node)
    scale = adjoint_precision.row_scale(k, coef.abs())
    if nonzero >= k:
        assert scale is None
        return
    assert bool((scale < 1).all())
    exact = _adjoint(node, in_shape, coef)
    low = _adjoint(node, in_shape, coef, dtype=torch.float32)
    size = _adjoint(node, in_shape, coef.abs(), True)
    bound = adjoint_precision.adjoint_gamma(node) * scale.reshape(b, s, *[1] * len(in_shape))
    assert bool(((exact - low).abs() <= bound * size).all())


def test_reduced_precision_float32_is_refused():
    before = torch.get_float32_matmul_precision()
    try:
        assert adjoint_precision.full_float32(torch.device("cpu"))
        torch.set_float32_matmul_precision("high")  # TF32/bf16 products allowed
        assert not adjoint_precision.full_float32(torch.device("cpu"))
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.fixture
def float32_everywhere(monkeypatch):
    """Float32 adjoints for passes of any size (the nets here are small), counted, and the
    steps whose rows took their smaller count bound (``row_scale``)."""
    monkeypatch.setattr(adjoint_precision, "MIN_ELEMENTS", 0)
    taken = {"n": 0, "scaled": 0}
    real, real_scale = crown._float32_adjoint, adjoint_precision.row_scale

    def counted(*args):
        centred = real(*args)
        taken["n"] += centred is not None
        return centred

    def scale_counted(*args):
        scale = real_scale(*args)
        taken["scaled"] += scale is not None
        return scale

    monkeypatch.setattr(crown, "_float32_adjoint", counted)
    monkeypatch.setattr(adjoint_precision, "row_scale", scale_counted)
    return taken


def _spec(graph, batch):
    n = int(np.prod(graph.outputs[0].shape))
    coef = torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)])
    return coef.unsqueeze(0).expand(batch, -1, -1), torch.zeros((batch, 2 * n), dtype=F64)


def _bounds(graph, box, method):
    coef, rhs = _spec(graph, box.lower.shape[0])
    return bound_spec(graph, box, coef, rhs, BoundOptions(method=method,
                                                          intermediate="crown")).lower


# CROWN on every net, dense and with windows kept; alpha-CROWN (float32 adjoints in its final
# float64 pass and in its intermediate passes) on the 1-d net
PASSES = [(net, "crown", windows) for net in NETS for windows in (False, True)] + [
    (NETS[1], "alpha", False)]


@pytest.mark.parametrize("net,method,windows", PASSES)
def test_float32_adjoint_passes_enclose_points_and_claim_no_more(net, method, windows,
                                                                 float32_everywhere,
                                                                 monkeypatch):
    if windows:
        monkeypatch.setattr(patches, "DENSE_SHARE", 100.0)
    graph = net()
    box = _box(graph, seed=5)
    low = _bounds(graph, box, method)
    assert float32_everywhere["n"] > 0
    assert float32_everywhere["scaled"] > 0  # neuron rows start with one nonzero
    monkeypatch.setattr(adjoint_precision, "ENABLED", False)
    high = _bounds(graph, box, method)
    # alpha's optimiser may stop at another point; CROWN's planes are the same
    slack = 1e-9 if method == "crown" else 1e-3
    assert bool((low <= high + slack * (1 + high.abs())).all())
    assert bool((low >= high - 1e-3 * (1 + high.abs())).all())  # and not loose
    out = graph.outputs[0].name
    for _ in range(20):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[out].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low - 1e-9).all())


@pytest.mark.parametrize("net", NETS)
def test_adjoint_errors_at_the_bound_claim_no_more(net, float32_everywhere, monkeypatch):
    """Float32 adjoints pushed by the full error bound, each sign at random: the pass still
    never claims more than the float64 pass (the allowance covers any error within it)."""
    graph = net()
    box = _box(graph, seed=7)
    inter = compute_intermediate(graph, box, method="crown")
    real = crown._rule_adjoint
    g = torch.Generator().manual_seed(1)
    pushed_rows = {"n": 0}

    def pushed(inter_, node, rule, coef, work):
        coefs, offset = real(inter_, node, rule, coef, work)
        if work is torch.float32:
            w = torch.as_tensor(node.consts[1], dtype=F64).abs()
            x = torch.zeros((coef.shape[0], *inter_.graph.shape_of(node.dynamic_inputs[0])),
                            dtype=F64)
            size = rule.backward(node, coef.abs(), [Interval(x, x), w])[0][0]
            sign = torch.randint(0, 2, size.shape, generator=g).to(F64) * 2 - 1
            k = adjoint_precision.adjoint_length(node)
            scale = adjoint_precision.row_scale(k, coef.abs())
            if scale is not None:  # rows with few nonzeros: their own, smaller bound
                size = size * scale.reshape(*scale.shape, *[1] * (size.dim() - 2))
                pushed_rows["n"] += 1
            coefs = [coefs[0] + sign * adjoint_precision.adjoint_gamma(node) * size]
        return coefs, offset

    monkeypatch.setattr(crown, "_rule_adjoint", pushed)
    monkeypatch.setattr(crown.windows, "start", lambda graph, name, c: c)  # dense steps
    coef, _ = _spec(graph, box.lower.shape[0])
    # the output's spec rows, and one-hot rows of the last Conv (one nonzero each: the
    # sparse rows' own bound at its adjoint)
    conv = [n for n in graph.nodes if n.op == "Conv"][-1]
    numel = int(np.prod(conv.shape))
    one_hot = torch.eye(numel, dtype=F64).expand(box.lower.shape[0], -1, -1)
    starts = [(graph.outputs[0].name, coef.reshape(*coef.shape[:2], *graph.outputs[0].shape)),
              (conv.name, one_hot.reshape(*one_hot.shape[:2], *conv.shape))]
    low = [crown.backward_bound(inter, name, c).lower for name, c in starts]
    monkeypatch.setattr(adjoint_precision, "ENABLED", False)
    for (name, c), pushed_low in zip(starts, low, strict=True):
        plain = crown.backward_bound(inter, name, c).lower
        assert bool((pushed_low <= plain + 1e-9 * (1 + plain.abs())).all())
    assert pushed_rows["n"] > 0  # some rows were sparse enough for their own bound


def test_row_scale_probe_gives_the_full_count():
    """``row_scale`` settles rows from a leading part of them when it already holds k
    nonzeros; rows whose nonzeros sit at the end, or number fewer than k, get the factor of
    their full count (the same as counting every entry)."""
    k, n = 10, 4 * adjoint_precision.COUNT_PROBE * 10
    dense = torch.ones((2, 3, n), dtype=F64)
    assert adjoint_precision.row_scale(k, dense) is None
    late = torch.zeros((2, 3, n), dtype=F64)
    late[..., -k:] = 1.0  # k nonzeros, all past the probe: still no scale
    assert adjoint_precision.row_scale(k, late) is None
    late[0, 1, -1] = 0.0  # one row with k - 1 nonzeros, past the probe
    scale = adjoint_precision.row_scale(k, late)
    expect = torch.ones((2, 3), dtype=F64)
    expect[0, 1] = adjoint_precision.gamma(k - 1 + 3) / adjoint_precision.gamma(k + 3)
    assert scale is not None and torch.allclose(scale, expect, rtol=0, atol=1e-15)


@pytest.mark.parametrize("net", NETS)
def test_input_step_bounds_its_own_contribution(net, float32_everywhere, monkeypatch):
    """A float32 adjoint at the input's only consumer bounds A.f(c) - |A_in| r itself
    (``crown._Pass.closes_input``): the same bound as the pass that keeps the input
    coefficients and concretises them, for dense and window rows, and below sampled values."""
    graph = net()
    box = _box(graph, seed=9)
    inter = compute_intermediate(graph, box, method="crown")
    first = graph.inputs[0].name
    assert len(graph.consumers(first)) == 1
    assert graph.consumers(first)[0].op in adjoint_precision.WEIGHTED_OPS
    closing = []
    real = crown._step

    def step(p, node, *args):
        closing.append(p.closes_input is not None and node.dynamic_inputs[0] == first)
        return real(p, node, *args)

    monkeypatch.setattr(crown, "_step", step)
    coef, _ = _spec(graph, box.lower.shape[0])
    out = graph.outputs[0]
    coef = coef.reshape(*coef.shape[:2], *out.shape)
    for windows in (False, True):
        if windows:
            monkeypatch.setattr(patches, "DENSE_SHARE", 100.0)
        closing.clear()
        closed = crown.backward_bound(inter, out.name, coef).lower
        assert any(closing)
        closing.clear()
        kept = crown.backward_bound(inter, out.name, coef, keep_input=True).lower
        assert not any(closing)
        assert torch.allclose(closed, kept, rtol=1e-12, atol=1e-12)
        for _ in range(10):
            x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
            y = _forward_all(graph, x)[out.name].flatten(1)
            assert bool((torch.cat([y, -y], 1) >= closed - 1e-9).all())


@pytest.mark.parametrize("mostly_dense", [False, True], ids=["short", "dense"])
@pytest.mark.parametrize("seed", range(4))
def test_row_scale_equals_the_full_count_on_random_rows(seed, mostly_dense):
    """Rows with nonzeros at random places (some all in the probe, some past it, some fewer
    than k): the factor of each row's full count, dense and on windows' values; most rows
    short in the probe (counted whole) or most dense there (the short ones counted on)."""
    g = torch.Generator().manual_seed(seed)
    k = 6
    probe = adjoint_precision.COUNT_PROBE * k
    n = 3 * probe
    values = torch.zeros((2, 9, n), dtype=F64)
    for b in range(2):
        for s in range(9):
            if mostly_dense and s < 7:  # k nonzeros or more inside the probe
                at = torch.randperm(probe, generator=g)[:k + s]
                values[b, s, at] = torch.randn(k + s, generator=g, dtype=F64)
                continue
            m = int(torch.randint(0, 2 * k, (1,), generator=g))
            at = torch.randperm(n, generator=g)[:m]
            values[b, s, at] = torch.randn(m, generator=g, dtype=F64)
    count = (values != 0).sum(-1).clamp(max=k).to(F64) + 3
    u = adjoint_precision.U32
    expect = (count * u / (1 - count * u)) / adjoint_precision.gamma(k + 3)
    scale = adjoint_precision.row_scale(k, values.abs())
    if bool((count >= k + 3).all()):
        assert scale is None
    else:
        assert scale is not None and torch.equal(scale, expect)
