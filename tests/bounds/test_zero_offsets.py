"""Relaxed steps skip constant all-zero plane offsets (``patches_step.has_offset``): alpha-CROWN
on ReLU nets (dense, column alphas, windows) gives the same bound and the same alpha gradient
as with every offset's product taken, encloses sampled outputs, and offsets that depend on
alpha (S-shaped curves) are still taken."""

from __future__ import annotations

import pytest
import torch

from bounds.engine import alpha, patches, patches_step
from bounds.engine.alpha import optimize_alpha
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp
from tests.bounds.test_conv_patches import _forward_all, _resnet_2d

F64 = torch.float64


def _mlp():
    return random_mlp([6, 12, 12, 4], seed=3)


def _box(graph, seed):
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn((2, *graph.inputs[0].shape), generator=g, dtype=F64)
    return Interval(centre - 0.4, centre + 0.4)


def _rows(graph, batch):
    out = graph.outputs[0]
    n = 1
    for d in out.shape:
        n *= d
    coef = torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)])
    return coef.reshape(1, 2 * n, *out.shape).expand(batch, *([-1] * (len(out.shape) + 1)))


@pytest.mark.parametrize("net,sparse,share", [(_mlp, False, None), (_mlp, True, None),
                                              (_resnet_2d, True, 100.0)])
def test_skipping_zero_offsets_keeps_bound_and_gradient(net, sparse, share, monkeypatch):
    if share is not None:
        monkeypatch.setattr(patches, "DENSE_SHARE", share)
    graph = net()
    box = _box(graph, seed=1)
    inter = compute_intermediate(graph, box, method="crown")
    coef = _rows(graph, 2)
    out = graph.outputs[0].name
    results, skipped = [], {"n": 0}
    real = patches_step.has_offset

    def counted(offset):
        taken = real(offset)
        skipped["n"] += not taken
        return taken

    for fn in (counted, lambda offset: True):
        monkeypatch.setattr(patches_step, "has_offset", fn)
        with torch.enable_grad():
            results.append(optimize_alpha(inter, out, coef, iterations=5, sparse=sparse))
    assert skipped["n"] > 0
    (low, alphas), (full, full_alphas) = results
    assert torch.equal(low, full)
    assert alphas.keys() == full_alphas.keys()
    for k in alphas:  # the same alphas after five steps: the same gradients on the way
        assert torch.equal(alphas[k], full_alphas[k])
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[out].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low).all())


def test_offsets_that_depend_on_alpha_are_taken(monkeypatch):
    graph = random_mlp([5, 8, 3], seed=2, activation="Sigmoid")
    box = _box(graph, seed=2)
    seen = []
    real = patches_step.has_offset

    def spy(offset):
        seen.append((offset.requires_grad, real(offset)))
        return real(offset)

    monkeypatch.setattr(patches_step, "has_offset", spy)
    monkeypatch.setattr(alpha, "chain", lambda graph, start: False)  # the engine's passes
    coef = _rows(graph, 2).flatten(2)
    rhs = torch.zeros(coef.shape[:2], dtype=F64)
    low = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha")).lower
    assert any(grad for grad, _ in seen)
    assert all(taken for grad, taken in seen if grad)
    for _ in range(30):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[graph.outputs[0].name].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low).all())
