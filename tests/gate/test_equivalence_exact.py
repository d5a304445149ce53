"""The equivalence gate on random ReLU MLP pairs against the exact maximum difference.

``g - f`` of two ReLU MLPs of equal depth is itself a ReLU MLP (hidden layers stacked
block-diagonally, last layer ``[-W_f, W_g]``), so its exact largest ``|g - f|_inf`` over a box
comes from enumerating activation patterns with one LP each (``tests/bab/exact.py``). The gate
must prove ``--max-diff`` 2% above that maximum and refute it 2% below with a counterexample,
and never answer the other way.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from scipy.linalg import block_diag

from tests.bab.exact import exact_min
from tests.onnx_builders import gemm_relu_mlp
from verifier.config import VerifyConfig
from verifier.gate.data import Dataset
from verifier.gate.equiv_run import EquivalenceProblem, verify_equivalence_sample
from verifier.gate.equivalence import EquivalenceProperty
from verifier.gate.specs import BallOptions

SIZES = [2, 3, 3, 2]  # g - f has 12 ReLUs: at most 4096 LPs per exact bound
EPS = 0.3


def _pair(seed: int) -> tuple[list, list]:
    """A random MLP and a copy with every weight and bias moved by up to 0.1."""
    rng = np.random.default_rng(seed)
    f = [(rng.normal(size=(o, i)), rng.normal(size=o) * 0.5)
         for i, o in zip(SIZES[:-1], SIZES[1:], strict=True)]
    g = [(w + rng.uniform(-0.1, 0.1, w.shape), b + rng.uniform(-0.1, 0.1, b.shape))
         for w, b in f]
    # The ONNX models hold float32 weights: compute the exact answer on those same values.
    cast = [[(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
             for w, b in net] for net in (f, g)]
    return cast[0], cast[1]


def _difference_mlp(f: list, g: list) -> list:
    """Weights of the MLP computing g(x) - f(x)."""
    first = (np.vstack([f[0][0], g[0][0]]), np.concatenate([f[0][1], g[0][1]]))
    hidden = [(block_diag(wf, wg), np.concatenate([bf, bg]))
              for (wf, bf), (wg, bg) in zip(f[1:-1], g[1:-1], strict=True)]
    last = (np.hstack([-f[-1][0], g[-1][0]]), g[-1][1] - f[-1][1])
    return [first, *hidden, last]


def _exact_max_diff(f: list, g: list, lower: np.ndarray, upper: np.ndarray) -> float:
    net = _difference_mlp(f, g)
    eye = np.eye(SIZES[-1])
    # max |y_j| = max(max y_j, -min y_j) = max(-min(-y_j), -min(y_j))
    return max(max(-exact_min(net, lower, upper, -e), -exact_min(net, lower, upper, e))
               for e in eye)


def _outcome(tmp_path, f, g, x0: np.ndarray, d: float):
    paths = []
    for name, layers in (("f", f), ("g", g)):
        onnx.save(gemm_relu_mlp(layers), tmp_path / f"{name}.onnx")
        paths.append(str(tmp_path / f"{name}.onnx"))
    problem = EquivalenceProblem.load(paths[0], paths[1],
                                      EquivalenceProperty(paths[0], "max-diff", d))
    data = Dataset(x0[None], np.zeros(1, np.int64), ("x0",))
    return verify_equivalence_sample(problem, data, 0, BallOptions(EPS),
                                     VerifyConfig(timeout=60, check_model=False))


@pytest.mark.parametrize("seed", range(8))
def test_gate_agrees_with_the_exact_maximum(tmp_path, seed):
    f, g = _pair(seed)
    x0 = np.random.default_rng(100 + seed).uniform(-1, 1, size=2)
    exact = _exact_max_diff(f, g, x0 - EPS, x0 + EPS)
    assert exact > 0.01  # the copies do differ on the ball
    above = _outcome(tmp_path, f, g, x0, exact * 1.02)
    assert above.outcome == "certified", (exact, above)
    below = _outcome(tmp_path, f, g, x0, exact * 0.98)
    assert below.outcome == "falsified", (exact, below)
    shown = np.abs(below.cex_y - below.cex_ref_y).max()
    assert exact * 0.98 <= shown <= exact + 1e-5
    assert np.all(np.abs(below.cex_x - x0) <= EPS + 1e-7)


def _both_mlp(f: list, g: list) -> list:
    """Weights of the MLP computing concat(f(x), g(x))."""
    first = (np.vstack([f[0][0], g[0][0]]), np.concatenate([f[0][1], g[0][1]]))
    rest = [(block_diag(wf, wg), np.concatenate([bf, bg]))
            for (wf, bf), (wg, bg) in zip(f[1:], g[1:], strict=True)]
    return [first, *rest]


def _exact_label_violation(f: list, g: list, lower: np.ndarray, upper: np.ndarray) -> bool:
    """Some x in the box with f's class i on top (ties too) and g_k >= g_i for a k != i."""
    k = SIZES[-1]
    coef, rhs = [], []
    for i in range(k):
        for m in range(k):
            if m == i:
                continue
            rows = [np.eye(2 * k)[j] - np.eye(2 * k)[i] for j in range(k) if j != i]
            rows.append(np.eye(2 * k)[k + i] - np.eye(2 * k)[k + m])
            coef.append(rows)
            rhs.append(np.zeros(len(rows)))
    from tests.bab.exact import exact_sat

    return exact_sat(_both_mlp(f, g), lower, upper, np.array(coef), np.array(rhs))


@pytest.mark.parametrize("seed", range(8))
def test_same_label_agrees_with_the_exact_answer(tmp_path, seed):
    f, g = _pair(seed)
    x0 = np.random.default_rng(200 + seed).uniform(-1, 1, size=2)
    paths = []
    for name, layers in (("f", f), ("g", g)):
        onnx.save(gemm_relu_mlp(layers), tmp_path / f"{name}.onnx")
        paths.append(str(tmp_path / f"{name}.onnx"))
    problem = EquivalenceProblem.load(paths[0], paths[1],
                                      EquivalenceProperty(paths[0], "same-label"))
    data = Dataset(x0[None], np.zeros(1, np.int64), ("x0",))
    got = verify_equivalence_sample(problem, data, 0, BallOptions(EPS),
                                    VerifyConfig(timeout=60, check_model=False))
    violated = _exact_label_violation(f, g, x0 - EPS, x0 + EPS)
    assert got.outcome == ("falsified" if violated else "certified"), (violated, got)
    if violated:
        assert np.all(np.abs(got.cex_x - x0) <= EPS + 1e-7)
        assert problem.check(got.cex_x) is not None


def test_same_label_seeds_cover_both_answers():
    """The seeds above hold violated and kept labels (else the test would check one side)."""
    answers = set()
    for seed in range(8):
        x0 = np.random.default_rng(200 + seed).uniform(-1, 1, size=2)
        answers.add(_exact_label_violation(*_pair(seed), x0 - EPS, x0 + EPS))
    assert answers == {True, False}
