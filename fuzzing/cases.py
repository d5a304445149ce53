"""Fuzz cases: a random network, a random property placed at a chosen distance from its
decision boundary, and the VNN-LIB text; deterministic in ``(seed, index)``.

Placement (``mode``): the real-arithmetic optimum T of the property (``oracle.property_optimum``;
``sat`` iff T <= 0) is computed, every rhs is moved by T (recentring on the boundary), T is
computed again on the recentred property (now accurate to ~1e-6, see oracle.py), and every rhs
is moved by that T plus a signed offset s. The final optimum is then -s: ``sat`` for s > 0,
``unsat`` for s < 0.

* ``near``: |s| log-uniform in [1e-4, 1e-2] * unit (unit = 1 + the largest |rhs| after
  recentring), sign 50/50: answers that flip with a tiny change of the threshold;
* ``far``: |s| in [1e-2, 0.5] * unit;
* ``raw``: no shift (robust: rhs 0, the VNN-COMP form; others: rhs between the sampled minimum
  and maximum of each row), margin T from one solve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from fuzzing.nets import Net, random_net
from fuzzing.oracle import property_optimum
from fuzzing.specs import SPEC_KINDS, PropSpec, random_prop, to_vnnlib
from fuzzing.unusual_oracle import session
from verifier.onnx_import.loader import ImportedModel, import_proto

NET_KINDS = ("mlp", "mixed", "cnn")
NET_WEIGHTS = (0.45, 0.25, 0.30)
MODES = ("near", "far", "raw")
MODE_WEIGHTS = (0.6, 0.25, 0.15)
OPTIMUM_TIME_S = 20.0


@dataclass(frozen=True)
class Case:
    seed: int
    index: int
    net: Net
    prop: PropSpec
    mode: str
    margin: float  # the real-arithmetic optimum T of the final property (estimate; sat iff <= 0)
    margin_err: float  # how far the estimate may be off (solver gap)
    unit: float
    vnnlib: str

    @property
    def case_id(self) -> str:
        return f"{self.seed}:{self.index}"

    @property
    def kind(self) -> str:
        return f"{self.net.kind}/{self.prop.kind}/{self.mode}"


def load_bytes(data: bytes, label: str) -> ImportedModel:
    return import_proto(onnx.load_from_string(data), data, label)


def ort_outputs(onnx_bytes: bytes, xs: np.ndarray, input_shape) -> np.ndarray:
    """onnxruntime outputs ``[B, n_out]`` (float64 copies) for flattened inputs ``xs[B, n]``."""
    sess = session(onnx_bytes)
    outs = [sess.run(["y"], {"x": x.reshape(input_shape).astype(np.float32)})[0]
            for x in np.asarray(xs)]
    return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])


def _sampled_rhs(net: Net, prop: PropSpec, rng: np.random.Generator) -> PropSpec:
    """Raw thresholds between the sampled min and max of each row over the boxes."""
    xs = np.concatenate([rng.uniform(lo, hi, (32, lo.size)) for lo, hi in prop.boxes])
    ys = ort_outputs(net.onnx_bytes, xs, net.input_shape)
    vals = np.einsum("dko,so->sdk", prop.coef, ys)
    q = rng.uniform(-0.3, 0.4, size=prop.rhs.shape)
    rhs = vals.min(0) + q * (vals.max(0) - vals.min(0))
    return PropSpec(prop.kind, prop.boxes, prop.coef, rhs, prop.pairwise)


def make_case(seed: int, index: int) -> Case:
    """The case ``(seed, index)``: same inputs, same case (bit for bit)."""
    rng = np.random.default_rng([seed, index])
    net = random_net(str(rng.choice(NET_KINDS, p=NET_WEIGHTS)), rng)
    twin = load_bytes(net.oracle_bytes, "fuzz-twin").graph

    def label_of(x):
        return int(np.argmax(ort_outputs(net.onnx_bytes, x[None], net.input_shape)[0]))

    prop = random_prop(str(rng.choice(SPEC_KINDS)), net.n_in, net.n_out, label_of, rng)
    mode = str(rng.choice(MODES, p=MODE_WEIGHTS))
    deadline = time.monotonic() + OPTIMUM_TIME_S
    if mode == "raw" and not prop.pairwise:
        prop = _sampled_rhs(net, prop, rng)
    t0 = property_optimum(twin, prop, deadline)
    if mode == "raw":
        margin, err = t0, 1e-6 + 1e-4 * abs(t0)
        unit = 1.0 + float(np.max(np.abs(prop.rhs)))
    else:
        prop = prop.shifted(t0)
        t1 = property_optimum(twin, prop, deadline)
        unit = 1.0 + float(np.max(np.abs(prop.rhs)))
        lo, hi = (1e-4, 1e-2) if mode == "near" else (1e-2, 0.5)
        s = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * unit
        s *= 1.0 if rng.random() < 0.5 else -1.0
        prop = prop.shifted(t1 + s)
        margin, err = -s, 1e-6 + 1e-4 * abs(t1)
    comment = (f"nncert fuzz case {seed}:{index}  net {net.kind} {net.arch}  spec {prop.kind}"
               f"  mode {mode}\nreal-arithmetic optimum ~ {margin:.3e} (sat iff <= 0)")
    text = to_vnnlib(prop, net.n_in, net.n_out, comment)
    return Case(seed, index, net, prop, mode, margin, err, unit, text)
