"""AveragePool's backward step (``pooling._avg_backward``): torch's own pool-backward kernel, the
numbers of autograd's VJP of the forward (and the same gradient through it), declined where
the pool is padded or in 1-d; passes through it equal the VJP's bounds to the last bit and
enclose sampled outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import bounds.rules.pooling as pooling
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Node
from bounds.registry import rules
from bounds.types import Interval
from tests.bounds.test_conv_patches import _forward_all, _resnet_2d

F64 = torch.float64

# (input shape, kernel, strides): tiling, cells no window covers, overlapping, 3-d
POOLS = [((1, 3, 8, 8), (2, 2), (2, 2)), ((1, 2, 7, 9), (2, 2), (2, 2)),
         ((1, 2, 7, 7), (3, 3), (2, 2)), ((1, 2, 6, 5), (3, 2), (1, 1)),
         ((1, 2, 4, 6, 5), (2, 2, 2), (2, 2, 1))]


def _node(in_shape, kernel, strides, pads=None, extra=None):
    spatial = len(kernel)
    pads = pads or (0,) * (2 * spatial)
    extra = extra or (0,) * spatial
    out = tuple((in_shape[2 + i] + pads[i] + pads[spatial + i] + extra[i] - kernel[i])
                // strides[i] + 1 for i in range(spatial))
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "extra": extra,
             "dilations": (1,) * spatial, "count_include_pad": 0}
    return Node("pool", "AveragePool", ("x",), (1, in_shape[1], *out), attrs)


def _vjp(node, in_shape, coef):
    b, s = coef.shape[:2]
    x = torch.zeros((b * s, *in_shape), dtype=coef.dtype, requires_grad=True)
    out = pooling._avg_forward(node, [x])
    rows = coef.reshape(b * s, *node.shape)
    grad, = torch.autograd.grad((out * rows).sum(), [x], create_graph=coef.requires_grad)
    return grad.reshape(b, s, *in_shape)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("pool", POOLS)
def test_backward_is_the_vjp_and_so_is_its_gradient(pool, dtype):
    in_shape, kernel, strides = pool
    node = _node(in_shape, kernel, strides)
    g = torch.Generator().manual_seed(0)
    coef = torch.randn((2, 3, *node.shape), generator=g, dtype=dtype)
    x = torch.zeros((2, *in_shape), dtype=dtype)
    step = rules().get("AveragePool").backward
    coefs, offset = step(node, coef, [Interval(x, x)])
    assert offset is None
    assert torch.equal(coefs[0], _vjp(node, in_shape, coef))
    # the gradient through the step (alpha-CROWN's): the VJP's double backward
    weight = torch.randn(coefs[0].shape, generator=g, dtype=dtype)
    grads = []
    for fn in (lambda c: step(node, c, [Interval(x, x)])[0][0],
               lambda c: _vjp(node, in_shape, c)):
        leaf = coef.clone().requires_grad_(True)
        grads.append(torch.autograd.grad((fn(leaf) * weight).sum(), [leaf])[0])
    assert torch.equal(*grads)


def test_padded_ceil_mode_and_1d_pools_decline():
    step = rules().get("AveragePool").backward
    x = torch.zeros((1, 1, 2, 7, 7), dtype=F64)
    for node in (_node((1, 2, 7, 7), (3, 3), (2, 2), pads=(1, 1, 1, 1)),
                 _node((1, 2, 7, 7), (2, 2), (2, 2), extra=(1, 1))):
        assert step(node, torch.ones((1, 1, *node.shape), dtype=F64),
                    [Interval(x, x)]) == (None, None)
    x1 = torch.zeros((1, 1, 2, 8), dtype=F64)
    node = _node((1, 2, 8), (2,), (2,))
    assert step(node, torch.ones((1, 1, *node.shape), dtype=F64),
                [Interval(x1, x1)]) == (None, None)


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_passes_equal_the_vjp_and_enclose_sampled_outputs(method, monkeypatch):
    # Float64 adjoints in both passes: whether a Conv's adjoint is taken in float32 depends
    # on the chunk's size, which follows the free memory, so two passes a parallel worker's
    # allocations separate could round differently (seen once under -n 2; the float32 path
    # has its own tests in test_adjoint_precision.py).
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)
    graph = _resnet_2d()
    g = torch.Generator().manual_seed(4)
    centre = torch.randn((2, *graph.inputs[0].shape), generator=g, dtype=F64)
    box = Interval(centre - 0.2, centre + 0.2)
    out = graph.outputs[0]
    n = out.shape[-1] * out.shape[-2] * out.shape[-3]
    coef = torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)]).unsqueeze(0)
    coef = coef.expand(2, -1, -1)
    rhs = torch.zeros(coef.shape[:2], dtype=F64)
    options = BoundOptions(method=method, intermediate="crown")
    taken = {"n": 0}
    real = pooling._avg_backward

    def counted(*args):
        taken["n"] += 1
        return real(*args)

    registry = rules()._entries
    rule = registry["AveragePool"]
    monkeypatch.setitem(registry, "AveragePool", dataclasses.replace(rule, backward=counted))
    low = bound_spec(graph, box, coef, rhs, options).lower
    assert taken["n"] > 0
    monkeypatch.setitem(registry, "AveragePool", dataclasses.replace(rule, backward=None))
    vjp = bound_spec(graph, box, coef, rhs, options).lower
    # (to rounding, not bitwise: chunk sizes follow the free memory, and on AVX-512 machines
    # matrix products of other shapes sum in another order; alpha's steps carry such ulps on.
    # Failed bitwise once under -n 2 on one; a wrong step is off by far more)
    torch.testing.assert_close(low, vjp, rtol=1e-10, atol=1e-10)
    for _ in range(50):
        x = box.lower + (box.upper - box.lower) * torch.rand(box.lower.shape, dtype=F64)
        y = _forward_all(graph, x)[out.name].flatten(1)
        assert bool((torch.cat([y, -y], 1) >= low).all())
