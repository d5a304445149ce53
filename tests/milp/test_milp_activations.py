"""MILP encodings of LeakyRelu, Abs, Clip, MaxPool, ReduceMax (exact) and Sigmoid/Tanh/...
(relaxed): optima against the network evaluated at the solver's point and dense sampling."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper

import verifier.milp.backends as backends
from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.milp.nets import _model, make_spec
from verifier.milp import MilpOptions, milp_verify
from verifier.milp.backends import solve
from verifier.milp.encode import encode, is_exact
from verifier.milp.model import Expr

F32 = np.float32


def _act_nodes(op: str, src: str, dst: str):
    """(nodes, inits) of the activation ``op`` from ``src`` to ``dst`` ([1, n] tensors)."""
    if op.startswith("leaky"):
        return [helper.make_node("LeakyRelu", [src], [dst], alpha=float(op[5:]))], []
    if op.startswith("clip"):
        lo, hi = (float(v) for v in op[4:].split(","))
        inits = [numpy_helper.from_array(np.array(lo, F32), dst + "_lo"),
                 numpy_helper.from_array(np.array(hi, F32), dst + "_hi")]
        return [helper.make_node("Clip", [src, dst + "_lo", dst + "_hi"], [dst])], inits
    if op == "reducemax":  # [1, n] -> [1, n/2, 2] -> max over the pairs -> [1, n/2]
        shape = numpy_helper.from_array(np.array([1, -1, 2], np.int64), dst + "_shape")
        return [helper.make_node("Reshape", [src, dst + "_shape"], [dst + "_r"]),
                helper.make_node("ReduceMax", [dst + "_r"], [dst], axes=[2], keepdims=0)], [shape]
    return [helper.make_node(op, [src], [dst])], []


def _net(op: str, seed: int, n_in: int = 3, hidden: int = 6, n_out: int = 2):
    """Gemm -> op -> Gemm -> op -> Gemm."""
    rng = np.random.default_rng(seed)
    sizes = [n_in, hidden, hidden, n_out]
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        fan_in = a if i == 0 or op != "reducemax" else a // 2
        w = (rng.normal(size=(b, fan_in)) / np.sqrt(fan_in)).astype(F32) * F32(1.5)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array((rng.normal(size=b) * 0.3).astype(F32), f"b{i}")]
        out = "y" if i == len(sizes) - 2 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], transB=1))
        if out != "y":
            an, ai = _act_nodes(op, out, f"h{i}")
            nodes, inits, prev = nodes + an, inits + ai, f"h{i}"
    return _model(nodes, inits, (1, n_in), (1, n_out))


def _pool_net(seed: int, stride: int, pad: int):
    """Conv(1 ch, 2x2, pad 1: 3x3 -> 4x4) -> Relu -> MaxPool(2x2) -> Flatten -> Gemm(2)."""
    rng = np.random.default_rng(seed)
    side = (4 + 2 * pad - 2) // stride + 1
    inits = [numpy_helper.from_array((rng.normal(size=(1, 1, 2, 2)) / 2).astype(F32), "cw"),
             numpy_helper.from_array((rng.normal(size=1) * 0.2).astype(F32), "cb"),
             numpy_helper.from_array((rng.normal(size=(2, side * side)) / 2).astype(F32),
                                     "w"),
             numpy_helper.from_array((rng.normal(size=2) * 0.1).astype(F32), "b")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2],
                              strides=[stride, stride], pads=[pad] * 4),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    return _model(nodes, inits, (1, 1, 3, 3), (1, 2))


def _min_output(model, lower, upper, coef, backend="highs"):
    """min coef @ y over the box by MILP (real arithmetic); returns (value, argmin x, exact)."""
    graph = model.graph
    shape = graph.inputs[0].shape
    box = Interval(torch.as_tensor(lower).reshape(1, *shape),
                   torch.as_tensor(upper).reshape(1, *shape))
    zero = torch.zeros(1, 1, len(coef), dtype=torch.float64)
    res = bound_spec(graph, box, zero, torch.zeros(1, 1, dtype=torch.float64),
                     BoundOptions(method="crown"))
    enc = encode(graph, lower, upper, res.intermediate, res.deltas, float_errors=False)
    m = enc.model.copy()
    out = enc.output
    m.add_rows(Expr(out.idx, coef[None] @ out.mat, coef[None] @ out.const), -np.inf, np.inf)
    m.objective = {int(j): float(c) for j, c in zip(out.idx, coef @ out.mat, strict=True)}
    sol = solve(m, 30, backend)
    assert sol.status == "optimal", sol
    return sol.objective + float(coef @ out.const), sol.x[enc.inputs], enc


def _sampled(model, lower, upper, coef, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(lower, upper, (n, lower.size))
    corners = np.where(rng.random((64, lower.size)) < 0.5, lower, upper)
    xs = np.vstack([xs, corners])
    shape = model.graph.inputs[0].shape
    (y,) = run_graph(model.graph, torch.as_tensor(xs).reshape(len(xs), *shape))
    return y.reshape(len(xs), -1).double().numpy() @ coef


def _value_at(model, x, coef):
    shape = model.graph.inputs[0].shape
    (y,) = run_graph(model.graph, torch.as_tensor(x, dtype=torch.float64).reshape(1, *shape))
    return float(y.reshape(-1).double().numpy() @ coef)


EXACT = ["leaky0.1", "leaky0.5", "leaky2.0", "leaky-0.3", "Abs", "clip-1,1", "clip0,0.5",
         "clip-0.2,3", "reducemax"]


@pytest.mark.parametrize("op", EXACT)
@pytest.mark.parametrize("seed", range(3))
def test_exact_encoding_attains_its_optimum_and_bounds_the_samples(op, seed):
    model = _net(op, seed)
    rng = np.random.default_rng(100 + seed)
    lower = rng.uniform(-1.5, 0, 3)
    upper = lower + rng.uniform(0.2, 2.0, 3)
    coef = rng.normal(size=2)
    value, x, enc = _min_output(model, lower, upper, coef)
    assert enc.exact and is_exact(model.graph)
    assert np.all(x >= lower - 1e-9) and np.all(x <= upper + 1e-9)
    assert _value_at(model, np.clip(x, lower, upper), coef) == pytest.approx(value, abs=1e-5)
    assert value <= _sampled(model, lower, upper, coef).min() + 1e-7


@pytest.mark.parametrize(("stride", "pad"), [(1, 0), (2, 0), (2, 1), (1, 1)])
def test_maxpool_encoding_is_exact(stride, pad):
    model = _pool_net(stride + 3 * pad, stride, pad)
    lower, upper = -np.ones(9) * 0.5, np.ones(9) * 0.5
    for coef in (np.array([1.0, 0.0]), np.array([-1.0, 0.5])):
        value, x, enc = _min_output(model, lower, upper, coef)
        assert enc.n_unstable > 0
        assert _value_at(model, np.clip(x, lower, upper), coef) == pytest.approx(value, abs=1e-5)
        assert value <= _sampled(model, lower, upper, coef, n=3000).min() + 1e-7


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Atan"])
def test_relaxed_encoding_is_a_sound_lower_bound(op):
    model = _net(op, 7)
    lower, upper = -np.ones(3), np.ones(3)
    assert not is_exact(model.graph)
    for coef in (np.array([1.0, -1.0]), np.array([-0.5, 2.0])):
        value, _, enc = _min_output(model, lower, upper, coef)
        assert not enc.exact
        sampled = _sampled(model, lower, upper, coef).min()
        assert value <= sampled + 1e-7
        assert value >= sampled - 0.5 * (1 + abs(sampled))  # not vacuous


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_relaxed_milp_verdicts(op):
    """unsat proved through the relaxation; sat only with a validated counterexample."""
    model = _net(op, 3)
    box = [(-np.ones(3) * 0.3, np.ones(3) * 0.3)]
    coef = np.array([1.0, 0.0])
    samples = _sampled(model, *box[0], coef)
    lo, hi = samples.min(), samples.max()
    far = make_spec(box, [[coef]], [[lo - 0.5 * (hi - lo) - 0.1]])
    verdict, cex, _ = milp_verify(model, far, time.monotonic() + 30)
    assert verdict == "unsat" and cex is None
    # Known sat: the threshold is the sampled maximum, so almost every input is a witness; the
    # relaxed optimum's input, run through the network, lies far below it.
    easy = make_spec(box, [[coef]], [[hi]])
    verdict, cex, _ = milp_verify(model, easy, time.monotonic() + 30)
    assert verdict == "sat"
    assert cex is not None and float(np.asarray(cex.y).reshape(-1) @ coef) <= hi


@pytest.mark.parametrize("op", ["leaky0.25", "Abs", "clip-1,1"])
def test_milp_verify_decides_piecewise_nets(op):
    model = _net(op, 11)
    box = [(-np.ones(3) * 0.5, np.ones(3) * 0.5)]
    coef = np.array([1.0, -1.0])
    value, _, _ = _min_output(model, *box[0], coef)
    for shift, expected in ((0.05, "sat"), (-0.05, "unsat")):
        spec = make_spec(box, [[coef]], [[value + shift * (1 + abs(value))]])
        verdict, cex, _ = milp_verify(model, spec, time.monotonic() + 30)
        assert verdict == expected
        assert (cex is not None) == (expected == "sat")


@pytest.mark.parametrize("op", ["leaky0.1", "Abs", "clip-1,1", "reducemax", "Sigmoid"])
def test_backends_agree_on_activation_nets(op):
    pytest.importorskip("gurobipy")
    model = _net(op, 5)
    lower, upper = -np.ones(3), np.ones(3)
    coef = np.array([1.0, -2.0])
    value_g, _, _ = _min_output(model, lower, upper, coef, backend="gurobi")
    value_h, _, _ = _min_output(model, lower, upper, coef, backend="highs")
    assert value_g == pytest.approx(value_h, abs=1e-5)


def test_gurobi_size_limit_falls_back_on_a_real_model():
    """A model over the restricted license's size goes to HiGHS (with or without gurobipy)."""
    model = _net("leaky0.1", 2, n_in=2100, hidden=4)  # > 2,000 columns
    lower, upper = -np.ones(2100) * 0.01, np.ones(2100) * 0.01
    spec = make_spec([(lower, upper)], [[np.array([1.0, 0.0])]], [[1e6]])
    verdict, _, stats = milp_verify(model, spec, time.monotonic() + 60,
                                    options=MilpOptions(backend="gurobi", use_crown=False))
    assert verdict == "sat"
    used = {s["backend"] for s in stats["region_0"]["solves"]}
    if backends._GUROBI_MISSING is None and used == {"gurobi"}:
        pytest.skip("gurobipy has a full license here")
    assert used == {"highs"}
