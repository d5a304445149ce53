"""Composed queries on random ReLU networks against exact answers (tests/bab/exact.py: one LP
per activation pattern, independent of nncert): the largest |f(x) - g(x)| of two networks on
shared inputs (the product network is one MLP with block weights), and the largest value of a
hidden neuron. Thresholds 5% beyond the exact value must be unsat, 5% within it sat."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bab.exact import exact_min
from tests.compose.nets import relu_net
from verifier.compose.run import verify_query
from verifier.config import VerifyConfig
from verifier.spec import parse_query

BOX = "(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] -1) (<= X[0,1] 1)))\n"
LOWER, UPPER = np.full(2, -1.0), np.full(2, 1.0)


def _nets(seed: int):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(4, 2)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32) * 0.5
    w2 = rng.normal(size=(1, 4)).astype(np.float32)
    b2 = rng.normal(size=1).astype(np.float32) * 0.5
    noise = [(rng.normal(size=a.shape) * 0.05).astype(np.float32) for a in (w1, b1, w2, b2)]
    f = (w1, b1, w2, b2)
    g = tuple(a + n for a, n in zip(f, noise, strict=True))
    return f, g


def _largest_difference(f, g) -> float:
    """max over the box of |f(x) - g(x)|, exactly: both networks as one block MLP."""
    w1 = np.vstack([f[0], g[0]]).astype(np.float64)
    b1 = np.concatenate([f[1], g[1]]).astype(np.float64)
    w2 = np.zeros((2, 8))
    w2[0, :4], w2[1, 4:] = f[2][0], g[2][0]
    b2 = np.array([f[3][0], g[3][0]], np.float64)
    weights = [(w1, b1), (w2, b2)]
    return max(-exact_min(weights, LOWER, UPPER, np.array([1.0, -1.0])),
               -exact_min(weights, LOWER, UPPER, np.array([-1.0, 1.0])))


def _verdict(text: str, models: dict) -> str:
    query = parse_query("(vnnlib-version <2.0>)\n" + text, compose=True)
    return verify_query(query, models, VerifyConfig(timeout=30)).result.verdict


@pytest.mark.parametrize("seed", range(6))
def test_equivalence_threshold_matches_the_exact_difference(seed):
    f, g = _nets(seed)
    largest = _largest_difference(f, g)
    decl = ("(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,1]))"
            "(declare-network g (declare-input U float32 [1,2]) (declare-output W float32 [1,1]))"
            + BOX + "(assert (and (= X[0,0] U[0,0]) (= X[0,1] U[0,1])))")
    models = {"f": relu_net(*f), "g": relu_net(*g)}
    for d, expected in ((largest * 1.05 + 1e-4, "unsat"), (largest * 0.95, "sat")):
        d = float(d)
        prop = f"(assert (or (>= (- Y[0,0] W[0,0]) {d!r}) (<= (- Y[0,0] W[0,0]) {-d!r})))"
        assert _verdict(decl + prop, models) == expected, (seed, largest, d)


@pytest.mark.parametrize("seed", range(4))
def test_hidden_neuron_threshold_matches_its_exact_maximum(seed):
    f, _ = _nets(seed)
    w1, b1 = f[0].astype(np.float64), f[1].astype(np.float64)
    pre_max = b1 + np.abs(w1).sum(axis=1)  # max of w x + b over [-1, 1]^2
    k = int(np.argmax(pre_max))
    top = max(pre_max[k], 0.0)
    decl = ("(declare-network f (declare-input X float32 [1,2]) "
            "(declare-hidden H float32 [1,4] \"h\") (declare-output Y float32 [1,1]))" + BOX)
    models = {"f": relu_net(*f)}
    above, below = float(top * 1.05 + 1e-3), float(top * 0.95)
    assert _verdict(decl + f"(assert (>= H[0,{k}] {above!r}))", models) == "unsat"
    if top > 0:
        assert _verdict(decl + f"(assert (>= H[0,{k}] {below!r}))", models) == "sat"
