"""Generated instances with a violation planted in a thin pocket near a vertex of a wide box.

``planted_instance(n, seed)`` builds a one-hidden-layer ReLU MLP on n inputs and a one-row spec
(unsafe: y <= 0). With z_i = (2 x_i - lo_i - hi_i) / (hi_i - lo_i) in [-1, 1] and a random sign
vector s (the planted vertex is x_i = hi_i where s_i = +1, lo_i where s_i = -1):

    y = (n + 1) + sum_i s_i z_i + D(x) - K relu(sum_i s_i z_i - (n - delta))
        [+ G relu(s_0 z_0 - (1 - gamma))  with ``off_vertex``]

D(x) >= 0 is a small random ReLU layer (distractors), K = 2 C / delta with C = 2n + 1 + max D.
Outside the pocket ``sum s z > n - delta / 2`` the trap is too small to win and y >= 1; at the
vertex y <= -C. The gradient of y everywhere outside the pocket points away from the vertex, so
PGD from uniform or face starts walks away from it, and the pocket's share of the box is about
(delta / 2)^n / n! of 2^n. With ``off_vertex`` a guard neuron (G = 2 C / gamma, gamma =
delta / 8) makes the vertex itself safe: the violation then sits in a sliver next to it, which
evaluating the vertex misses and a fine PGD run started there finds in one step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tests.onnx_builders import gemm_relu_mlp
from verifier.onnx_import.loader import ImportedModel, import_proto
from verifier.spec.types import InputRegion, OutputCondition, Spec


@dataclass(frozen=True)
class Planted:
    model: ImportedModel
    spec: Spec
    vertex: np.ndarray  # the planted box vertex [n]
    witness: np.ndarray  # a point of the pocket [n] (the unsafe set holds there)
    layers: list  # [(W1, b1), (W2, b2)] as built


def _layers(lo, hi, sign, distract: int, delta: float, off_vertex: bool, rng):
    n = len(lo)
    width, mid = hi - lo, (hi + lo) / 2
    zw, zb = np.diag(2.0 / width), -2.0 * mid / width  # z = zw @ x + zb
    sz_w, sz_b = sign @ zw, float(sign @ zb)  # sum_i s_i z_i as a linear function of x
    dw = rng.normal(size=(distract, n)) * 0.3 / np.sqrt(n)
    db = rng.normal(size=distract) * 0.3
    dist_w, dist_b = dw @ zw, dw @ zb + db  # distractors act on z
    d_max = float(np.abs(dw).sum(1).sum() + np.abs(db).sum()) * 0.1
    c = 2 * n + 1 + d_max
    k, gamma = 2 * c / delta, delta / 8
    rows_w = [sz_w, sz_w, *dist_w]  # pass-through (always active), trap, distractors
    rows_b = [sz_b + n, sz_b - (n - delta), *dist_b]
    out = [1.0, -k, *([0.1] * distract)]
    if off_vertex:
        rows_w.append(sign[0] * zw[0])
        rows_b.append(sign[0] * zb[0] - (1 - gamma))
        out.append(2 * c / gamma)
    w1, b1 = np.array(rows_w), np.array(rows_b)
    w2, b2 = np.array([out]), np.array([1.0])  # (n + 1) + (sum s z + n) - n ... = 1 + r
    return [(w1, b1), (w2, b2)], gamma


def planted_instance(n: int = 24, seed: int = 0, delta: float = 0.2, distract: int = 8,
                     off_vertex: bool = False) -> Planted:
    """A model and spec whose only violations lie in a thin pocket at (or, ``off_vertex``,
    beside) a random vertex of the input box; see the module docstring."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1.0, 0.0, size=n)
    hi = lo + rng.uniform(0.5, 1.5, size=n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    sign[:2] = (1.0, -1.0)  # neither the all-lower nor the all-upper corner
    layers, gamma = _layers(lo, hi, sign, distract, delta, off_vertex, rng)
    proto = gemm_relu_mlp(layers)
    model = import_proto(proto, proto.SerializeToString(), f"planted-{n}-{seed}")
    cond = OutputCondition(np.ones((1, 1, 1)), np.zeros((1, 1)))
    spec = Spec((InputRegion(lo, hi, cond),), n, 1)
    vertex = np.where(sign > 0, hi, lo)
    witness = vertex.copy()
    if off_vertex:  # s_0 z_0 = 1 - 2 gamma: the guard is off, the trap still wins
        witness[0] = vertex[0] - sign[0] * gamma * (hi[0] - lo[0])
    return Planted(model, spec, vertex, witness, layers)


def mlp_value(layers, x: np.ndarray) -> np.ndarray:
    """The MLP's output on points x [B, n] in float64 (the reference for the tests)."""
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h
