"""The MILP encoding keeps its expressions sparse (verifier.milp.model.Expr), so that wide conv
layers encode, and ``auto`` decides nets with one layer of Relus by MILP
(verifier.milp.refine.one_kink_layer)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from tests.milp.nets import (
    conv_avgpool_layers,
    crown_encoding,
    make_spec,
    mlp_forward,
    onnx_cnn,
    onnx_conv_avgpool,
    oracle_min_t,
    output_at,
)
from verifier.milp import milp_verify
from verifier.milp.model import Expr, stack_rows
from verifier.milp.refine import milp_suits, one_kink_layer


def test_hand_written_layers_are_the_net():
    """The oracle's MLP (written from the weights) computes what the ONNX net computes."""
    model, layers = onnx_conv_avgpool(0), conv_avgpool_layers(0)
    xs = np.random.default_rng(0).uniform(-1, 1, (16, 9))
    got = run_graph(model.graph, torch.as_tensor(xs).reshape(16, 1, 3, 3))[0].numpy()
    want = np.array([mlp_forward(layers, x) for x in xs])
    np.testing.assert_allclose(got.reshape(16, 2), want, atol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_conv_avgpool_verdicts_match_enumeration(seed):
    """A 3x3 image, two 2x2 filters (8 Relus), average pooling, a dense layer: the MILP's
    verdict equals the exact activation-pattern enumeration's. The threshold sits 0.05 above
    (sat) or below (unsat) the exact minimum, alternating with the seed."""
    model, layers = onnx_conv_avgpool(seed), conv_avgpool_layers(seed)
    rng = np.random.default_rng(100 + seed)
    centre, radius = rng.uniform(-1, 1, 9), rng.uniform(0.2, 0.8, 9)
    lower, upper = centre - radius, centre + radius
    coef = np.array([[[1.0, -1.0]]])
    exact_min = oracle_min_t(layers, lower, upper, coef[0], np.zeros(1))  # min of y0 - y1
    sat = seed % 2 == 0
    rhs = np.array([[exact_min + (0.05 if sat else -0.05)]])
    verdict, _, _ = milp_verify(model, make_spec([(lower, upper)], coef, rhs),
                                time.monotonic() + 30, backend="highs")
    assert verdict == ("sat" if sat else "unsat")


def test_wide_conv_layer_encodes_sparsely_and_exactly():
    """A 20x20 image through eight 2x2 filters: 2888 Relus. Every expression stays sparse
    (a conv output reads 4 inputs; dense rows held 2888 x 3288 per node), and the encoding
    with the input fixed reproduces the net's output."""
    model = onnx_conv_avgpool(1, side=20, channels=8)
    n = 400
    lower, upper = -np.ones(n), np.ones(n)
    enc = crown_encoding(model, lower, upper, float_errors=False)
    assert enc.n_unstable > 1000
    assert enc.model.nnz < 20 * enc.model.n_rows  # a few entries per row, not thousands
    assert enc.output.mat.nnz <= 2 * enc.model.n_cols
    x = np.random.default_rng(2).uniform(lower, upper)
    got = output_at(enc, x)
    want = run_graph(model.graph, torch.as_tensor(x).reshape(1, 1, 20, 20))[0].reshape(-1)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


def test_expressions_accept_dense_and_stack_sparse():
    e = Expr(np.array([3, 7]), np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros(2))
    assert e.mat.format == "csr" and e.mat.nnz == 2
    v = Expr.variables(np.array([9]))
    s = stack_rows([(np.array([2]), v), (np.array([0, 1]), e)], 3)
    np.testing.assert_array_equal(s.idx, [3, 7, 9])
    np.testing.assert_array_equal(s.mat.toarray(), [[1, 0, 0], [0, 2, 0], [0, 0, 1]])
    np.testing.assert_array_equal(e.rows(np.array([False, True])).mat.toarray(), [[0.0, 2.0]])


def test_one_kink_layer_nets_get_milp_with_many_binaries():
    """``auto``'s rule: a one-Relu-layer net goes to MILP past the 64-binary limit of other
    nets; a net with two Relu layers (onnx_cnn) does not, nor with the rule switched off."""
    wide = onnx_conv_avgpool(1, side=12, channels=8)
    assert one_kink_layer(wide.graph) and not one_kink_layer(onnx_cnn(0).graph)
    spec = make_spec([(-np.ones(144), np.ones(144))], [[[1.0, -1.0]]], [[0.0]])
    assert milp_suits(wide.graph, spec, unstable={0: 500})
    assert not milp_suits(wide.graph, spec, unstable={0: 500}, one_layer=False)
    two = make_spec([(-np.ones(9), np.ones(9))], [[[1.0, -1.0]]], [[0.0]])
    assert not milp_suits(onnx_cnn(0).graph, two, unstable={0: 500})
