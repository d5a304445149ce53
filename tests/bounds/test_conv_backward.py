"""Direct backward rules of Conv and ConvTranspose against the vector-Jacobian product of
their forward (the generic path they replace), over strides, asymmetric pads, dilations,
groups, output padding, 1-d/2-d/3-d and the batch and spec axes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bounds.graph import Node
from bounds.registry import rules
from bounds.types import Interval

RNG = np.random.default_rng(7)


def _out_size(n, k, s, d, pb, pe):
    return (pb + n + pe - (d * (k - 1) + 1)) // s + 1


def _conv_node(cin, cout, sp_in, kernel, strides, dils, pads, group, bias=True):
    spatial = len(sp_in)
    w = RNG.standard_normal((cout, cin // group, *kernel))
    out_sp = tuple(_out_size(sp_in[i], kernel[i], strides[i], dils[i], pads[i],
                             pads[i + spatial]) for i in range(spatial))
    consts = {1: w}
    inputs = ("x", None)
    if bias:
        consts[2] = RNG.standard_normal(cout)
        inputs = ("x", None, None)
    attrs = {"strides": tuple(strides), "dilations": tuple(dils), "pads": tuple(pads),
             "group": group}
    return Node("conv", "Conv", inputs, (1, cout, *out_sp), attrs=attrs, consts=consts)


def _conv_t_node(cin, cout, sp_in, kernel, strides, dils, pads, out_pad, group):
    spatial = len(sp_in)
    w = RNG.standard_normal((cin, cout // group, *kernel))
    out_sp = tuple((sp_in[i] - 1) * strides[i] + dils[i] * (kernel[i] - 1) + 1 + out_pad[i]
                   - pads[i] - pads[i + spatial] for i in range(spatial))
    attrs = {"strides": tuple(strides), "dilations": tuple(dils), "pads": tuple(pads),
             "group": group, "output_padding": tuple(out_pad)}
    return Node("convt", "ConvTranspose", ("x", None, None), (1, cout, *out_sp), attrs=attrs,
                consts={1: w, 2: RNG.standard_normal(cout)})


def _args(node, in_shape, batch):
    x = torch.zeros((batch, *in_shape), dtype=torch.float64)
    consts = [torch.as_tensor(node.consts[p], dtype=torch.float64)
              for p in range(1, len(node.inputs))]
    return x, consts


def _vjp(node, coef, in_shape):
    """Input coefficients and offset by autograd: A J and A . f(0)."""
    rule = rules().get(node.op)
    b, s = coef.shape[:2]
    x, consts = _args(node, in_shape, b * s)
    x.requires_grad_(True)
    out = rule.forward(node, [x, *consts])
    (grad,) = torch.autograd.grad((out * coef.reshape(b * s, *node.shape)).sum(), [x])
    zero = rule.forward(node, [torch.zeros((1, *in_shape), dtype=torch.float64), *consts])
    offset = (coef * zero[0]).flatten(2).sum(-1)
    return grad.reshape(b, s, *in_shape), offset


def _check(node, in_shape, batch=2, spec=3):
    rule = rules().get(node.op)
    coef = torch.as_tensor(RNG.standard_normal((batch, spec, *node.shape)))
    x = torch.zeros((batch, *in_shape), dtype=torch.float64)
    _, consts = _args(node, in_shape, batch)
    coefs, offset = rule.backward(node, coef, [Interval(x, x), *consts])
    want, want_offset = _vjp(node, coef, in_shape)
    assert coefs[0].shape == want.shape
    torch.testing.assert_close(coefs[0], want, rtol=1e-12, atol=1e-10)
    assert all(c is None for c in coefs[1:])
    if offset is None:  # no bias: the output at zero is zero
        offset = torch.zeros_like(want_offset)
    torch.testing.assert_close(offset, want_offset, rtol=1e-12, atol=1e-10)


CONV_CASES = [
    # (cin, cout, spatial input, kernel, strides, dilations, pads (begins then ends), group)
    (2, 3, (7,), (3,), (2,), (1,), (1, 0), 1),
    (4, 6, (9,), (2,), (3,), (2,), (0, 2), 2),
    (2, 3, (6, 5), (3, 2), (2, 1), (1, 1), (1, 0, 0, 1), 1),
    (3, 4, (8, 8), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
    (4, 4, (7, 6), (2, 2), (1, 2), (2, 1), (0, 2, 1, 0), 2),
    (4, 8, (9, 9), (3, 3), (3, 2), (2, 3), (2, 0, 1, 3), 4),
    (2, 2, (5, 5), (1, 1), (2, 2), (1, 1), (0, 0, 0, 0), 1),
    (2, 3, (4, 5, 4), (2, 3, 2), (1, 2, 1), (1, 1, 2), (1, 0, 0, 0, 1, 1), 1),
    (2, 2, (3, 3), (3, 3), (1, 1), (1, 1), (2, 2, 2, 2), 1),  # pads wider than the kernel
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_equals_vjp(case):
    cin, cout, sp, kernel, strides, dils, pads, group = case
    node = _conv_node(cin, cout, sp, kernel, strides, dils, pads, group)
    _check(node, (1, cin, *sp))


def test_conv_backward_without_bias():
    node = _conv_node(2, 3, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, bias=False)
    _check(node, (1, 2, 6, 6), batch=1, spec=5)


CONV_T_CASES = [
    # (cin, cout, spatial input, kernel, strides, dilations, pads, output padding, group)
    (2, 3, (4,), (3,), (2,), (1,), (1, 0), (1,), 1),
    (2, 3, (3, 3), (3, 3), (2, 2), (1, 1), (1, 0, 0, 1), (1, 0), 1),
    (4, 6, (3, 4), (2, 3), (3, 1), (2, 1), (0, 1, 2, 0), (2, 0), 2),
    (2, 2, (2, 3, 2), (2, 2, 3), (2, 1, 2), (1, 2, 1), (0, 0, 1, 1, 0, 0), (1, 0, 0), 1),
    (3, 2, (5, 5), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (0, 0), 1),
]


@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose_backward_equals_vjp(case):
    cin, cout, sp, kernel, strides, dils, pads, out_pad, group = case
    node = _conv_t_node(cin, cout, sp, kernel, strides, dils, pads, out_pad, group)
    _check(node, (1, cin, *sp))


@pytest.mark.parametrize("stride,pad_begin,pad_end", list(itertools.product(
    (1, 2, 3), (0, 1, 2), (0, 1, 2))))
def test_conv_backward_every_remainder(stride, pad_begin, pad_end):
    """Every combination of stride and (asymmetric) pads, so both the cropping path and
    torch's padding/output_padding path are taken."""
    node = _conv_node(2, 2, (7, 8), (3, 2), (stride, stride), (1, 1),
                      (pad_begin, pad_end, pad_end, pad_begin), 1)
    _check(node, (1, 2, 7, 8), batch=1, spec=2)


def test_conv_backward_declines_dynamic_weight():
    node = _conv_node(2, 2, (5, 5), (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), 1)
    x = torch.zeros((1, 1, 2, 5, 5), dtype=torch.float64)
    w = torch.zeros((2, 2, 3, 3), dtype=torch.float64)
    coef = torch.zeros((1, 1, *node.shape), dtype=torch.float64)
    out = rules().get("Conv").backward(node, coef, [Interval(x, x), Interval(w, w)])
    assert out == (None, None)
