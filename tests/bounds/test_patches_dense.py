"""``Patches.to_dense`` written in place (scatter into zeros, outside cells zeroed and added):
the same coefficients and the same gradient as the reference that scatters into one extra
cell and drops it, for windows inside the value and windows reaching past its borders (even
holding nonzeros there), and passes with windows kept however large enclose sampled points."""

from __future__ import annotations

import math

import pytest
import torch

from bounds.engine import patches
from bounds.engine.patches import Patches
from tests.bounds.test_conv_patches import NETS, _box, _forward_all

F64 = torch.float64


def _reference(p: Patches) -> torch.Tensor:
    b, s = p.rows
    idx, _ = p._index
    lc = p.values.shape[2] * p.values.shape[3]
    flat = p.values.reshape(b, s, lc, -1)
    cells = math.prod(p.sp)
    out = flat.new_zeros((b, s, lc, cells + 1))
    out = out.scatter(3, idx.unsqueeze(2).expand(b, s, lc, idx.shape[-1]), flat)
    return out[..., :cells].reshape(b, s, *p.value_shape)


def _windows(shape, win, seed, reach):
    """Windows [2, 5, L, C, *win] at random origins (``reach``: some cells past the borders)."""
    g = torch.Generator().manual_seed(seed)
    spatial = len(win)
    sp = shape[len(shape) - spatial:]
    ell = math.prod(shape[: len(shape) - spatial - 1])
    c = shape[len(shape) - spatial - 1]
    values = torch.randn((2, 5, ell, c, *win), generator=g, dtype=F64)
    low = [-(w - 1) if reach else 0 for w in win]
    high = [n if reach else n - w + 1 for n, w in zip(sp, win, strict=True)]
    origin = torch.stack([torch.randint(lo, hi, (2, 5), generator=g)
                          for lo, hi in zip(low, high, strict=True)], -1)
    return Patches(values, origin, tuple(shape))


@pytest.mark.parametrize("reach", [False, True])
@pytest.mark.parametrize("shape,win", [((1, 3, 9, 8), (3, 4)), ((2, 2, 12), (5,)),
                                       ((1, 2, 5, 6, 5), (2, 3, 2))])
def test_to_dense_equals_the_reference_and_its_gradient(shape, win, reach):
    for seed in range(3):
        p = _windows(shape, win, seed, reach)
        assert torch.equal(p.to_dense(), _reference(p))
        weight = torch.randn((2, 5, *shape), dtype=F64)
        grads = []
        for fn in (lambda q: q.to_dense(), _reference):
            leaf = p.values.clone().requires_grad_(True)
            q = p.with_values(leaf)
            grads.append(torch.autograd.grad((fn(q) * weight).sum(), [leaf])[0])
        assert torch.equal(*grads)


def test_cells_outside_drop_whatever_they_hold():
    p = _windows((1, 3, 6, 6), (4, 4), 5, reach=True)
    assert p._index[1]  # some cells are outside
    assert torch.equal(p.with_values(p.values * 1e6).to_dense(),
                       _reference(p.with_values(p.values * 1e6)))


@pytest.mark.parametrize("net", NETS)
def test_window_passes_enclose_sampled_points(net, monkeypatch):
    from bounds.engine.spec_bounds import BoundOptions, bound_spec

    monkeypatch.setattr(patches, "DENSE_SHARE", 0.3)  # windows made dense early and often
    graph = net()
    box = _box(graph, seed=11)
    out = graph.outputs[0]
    n = math.prod(out.shape)
    coef = torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)]).unsqueeze(0)
    coef = coef.expand(box.lower.shape[0], -1, -1)
    rhs = torch.zeros(coef.shape[:2], dtype=F64)
    low = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown",
                                                         intermediate="crown")).lower
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[out.name].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low - 1e-9).all())


@pytest.mark.parametrize("net", NETS)
def test_memoised_slope_gap_gives_the_same_window_pass(net, monkeypatch):
    """Window relaxation steps gather the memoised gap plane (crown._window_planes): the
    same bounds, bitwise, as gathering both slopes and subtracting; sampled points inside."""
    import bounds.engine.crown as crown
    from bounds.engine.intermediate import compute_intermediate

    monkeypatch.setattr(patches, "DENSE_SHARE", 100.0)
    graph = net()
    box = _box(graph, seed=13)
    out = graph.outputs[0]
    n = math.prod(out.shape)
    coef = torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)])
    coef = coef.reshape(1, 2 * n, *out.shape).expand(box.lower.shape[0], *coef.shape[:1],
                                                      *out.shape)
    taken = {"gap": 0}
    real = crown._window_planes

    def counted(p, node, rule):
        rel, gap = real(p, node, rule)
        taken["gap"] += gap is not None
        return rel, gap

    monkeypatch.setattr(crown, "_window_planes", counted)
    inter = compute_intermediate(graph, box, method="crown")
    low = crown.backward_bound(inter, out.name, coef).lower
    assert taken["gap"] > 0
    monkeypatch.setattr(crown, "_window_planes",
                        lambda p, node, rule: (crown._relaxation(p, node, rule), None))
    inter_plain = compute_intermediate(graph, box, method="crown")
    plain = crown.backward_bound(inter_plain, out.name, coef).lower
    for name in inter.bounds:
        assert torch.equal(inter.bounds[name].lower, inter_plain.bounds[name].lower)
        assert torch.equal(inter.bounds[name].upper, inter_plain.bounds[name].upper)
    assert torch.equal(low, plain)
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[out.name].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low - 1e-9).all())
