"""Lower floors that hold in exact and float32 arithmetic (``OpRule.floor``,
``bounds.rules.floors``): IBP raises its lower ends to them after the symmetric rounding
allowance. A LayerNorm's variance came out negative and the Sqrt after it stopped every bound
pass (a small ViT); each floor is checked against sampled points, in float64 and float32."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.ibp import ibp_bounds, intersect
from bounds.engine.intermediate import compute_intermediate
from bounds.graph import Graph, Node, TensorInfo
from bounds.rules.floors import round_down_float32
from bounds.types import Interval

F64 = torch.float64
EPS = np.float32(1e-5)


def _layer_norm(width: int = 24, scale: float = 40.0) -> Graph:
    """x [1, 3, width] -> (x - mean) / sqrt(mean((x - mean)^2) + eps): the decomposed form
    that ONNX exporters write (opset < 17)."""
    shape, col = (1, 3, width), (1, 3, 1)
    rng = np.random.default_rng(0)
    w = (scale * rng.normal(size=(width, width)) / math.sqrt(width)).astype(np.float32)
    nodes = [
        Node("lin", "Linear", ("x", None, None), shape, {}, {1: w, 2: np.zeros(width, np.float32)}),
        Node("mean", "ReduceMean", ("lin",), col, {"axes": (2,), "keepdims": 1}),
        Node("centred", "Sub", ("lin", "mean"), shape),
        Node("square", "Pow", ("centred",), shape, {"exponent": 2.0}),
        Node("var", "ReduceMean", ("square",), col, {"axes": (2,), "keepdims": 1}),
        Node("var_eps", "Add", ("var", None), col, {}, {1: np.full((1, 1, 1), EPS)}),
        Node("std", "Sqrt", ("var_eps",), col),
        Node("normed", "Div", ("centred", "std"), shape),
    ]
    return Graph((TensorInfo("x", shape),), (TensorInfo("normed", shape),), tuple(nodes))


def _box(width: int, radius: float, seed: int) -> Interval:
    """A box with float32 ends (its float32 points are then inside it)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn((1, 3, width), generator=gen, dtype=F64)
    return Interval((centre - radius).float().double(), (centre + radius).float().double())


def _samples(box: Interval, n: int = 400) -> torch.Tensor:
    """Float32 points of ``box`` (corners among them)."""
    gen = torch.Generator().manual_seed(5)
    t = torch.rand((n, *box.lower.shape[1:]), generator=gen, dtype=F64)
    t[: n // 4] = t[: n // 4].round()
    x = (box.lower + (box.upper - box.lower) * t).float()
    return torch.clamp(x, box.lower.float(), box.upper.float())


def _assert_encloses(graph: Graph, box: Interval, bounds: dict) -> None:
    """Sampled float32 points, evaluated in float64 and in float32, lie in every value's
    interval."""
    x = _samples(box)
    for dtype in (F64, torch.float32):
        values = run_graph(graph, x.to(dtype), keep_all=True)
        for name, iv in bounds.items():
            v = values[name].to(F64)
            assert bool((v >= iv.lower - 1e-9).all()), (name, dtype)
            assert bool((v <= iv.upper + 1e-9).all()), (name, dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_norm_variance_keeps_its_epsilon(seed):
    """Wide pre-activations (rounding allowances of the squares' sum far above eps): the
    variance stays >= 0 and the Sqrt's input >= eps, where IBP went negative before and the
    Sqrt raised; the bounds enclose sampled points in float64 and float32."""
    graph = _layer_norm()
    box = _box(24, 1.0, seed)
    bounds = ibp_bounds(graph, box)
    assert float(bounds["square"].lower.min()) >= 0.0
    assert float(bounds["var"].lower.min()) >= 0.0
    assert float(bounds["var_eps"].lower.min()) == float(EPS)
    assert bool(torch.isfinite(bounds["normed"].lower).all())
    _assert_encloses(graph, box, bounds)
    crown = compute_intermediate(graph, box, method="crown")
    assert float(crown.bounds["var_eps"].lower.min()) >= float(EPS)
    _assert_encloses(graph, box, crown.bounds)


def test_floors_only_where_the_inputs_are_nonnegative():
    """A sum with a negative operand and an odd power get no floor: their IBP stays as it
    was (negative lower ends, enclosing samples)."""
    shape = (1, 6)
    nodes = [Node("s", "Add", ("x", None), shape, {}, {1: np.full(shape, 0.5, np.float32)}),
             Node("c", "Pow", ("x",), shape, {"exponent": 3.0}),
             Node("m", "Mul", ("x", "x"), shape)]
    graph = Graph((TensorInfo("x", shape),), (TensorInfo("m", shape),), tuple(nodes))
    box = Interval(-torch.ones(1, 6, dtype=F64), torch.ones(1, 6, dtype=F64))
    bounds = ibp_bounds(graph, box)
    assert float(bounds["s"].lower.max()) < 0 and float(bounds["c"].lower.max()) < 0
    assert float(bounds["m"].lower.max()) < 0
    _assert_encloses(graph, box, bounds)


def test_round_down_float32():
    x = torch.tensor([0.1, 1.0, -0.1, 1e-5, 0.0, 3.0000001], dtype=F64)
    down = round_down_float32(x)
    assert bool((down <= x).all())
    assert torch.equal(down.to(torch.float32).to(F64), down)  # float32 values
    up = torch.nextafter(down.to(torch.float32), torch.full((6,), math.inf)).to(F64)
    assert bool((up > x).all() | (down == x).all())


def test_intersect_ignores_a_nan_end():
    a = Interval(torch.tensor([0.0, -1.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64))
    b = Interval(torch.tensor([math.nan, 0.5], dtype=F64), torch.tensor([0.5, math.nan]))
    out = intersect(a, b)
    assert torch.equal(out.lower, torch.tensor([0.0, 0.5], dtype=F64))
    assert torch.equal(out.upper, torch.tensor([0.5, 2.0], dtype=F64))


def test_softmax_of_unbounded_scores_stays_in_its_range():
    """Scores unbounded above (an exploded IBP): the Softmax interval is within [0, 1], not
    NaN (a NaN there reached every bound of a ViT through ``intersect``); the ends are [0, 1]
    widened by the rounding allowance."""
    shape = (1, 4)
    graph = Graph((TensorInfo("x", shape),), (TensorInfo("p", shape),),
                  (Node("p", "Softmax", ("x",), shape, {"axis": 1}),))
    box = Interval(torch.tensor([[-1.0, 0.0, -math.inf, 2.0]], dtype=F64),
                   torch.tensor([[1.0, math.inf, 3.0, 2.0]], dtype=F64))
    out = ibp_bounds(graph, box)["p"]
    assert not bool(torch.isnan(out.lower).any() | torch.isnan(out.upper).any())
    assert bool((out.lower >= -1e-5).all() & (out.upper <= 1 + 1e-5).all())  # (+ rounding)


@pytest.mark.parametrize("n,offset,spread", [(8, 0.0, 1.0), (64, 8.0, 1.0), (768, 1000.0, 0.01),
                                             (768, 30.0, 0.3), (3, 1e4, 1e-3)])
def test_float32_variance_of_means_stays_within_its_slack(n, offset, spread):
    """mean(x^2) - mean(x)^2 evaluated in float32 as onnxruntime does (sequential sums of
    float32 values and squares), also with pairwise sums and in float64, is within
    variance_slack(n) * mean(x^2) of the exact variance, either way: the error a
    LayerNormalization's Slack node carries (``converters/composite._normalize``)."""
    from bounds.rules.floors import variance_slack

    rng = np.random.default_rng(n)
    worst = 0.0
    for _ in range(200):
        x = (offset + spread * rng.standard_normal(n)).astype(np.float32)
        if rng.random() < 0.3:
            x[:] = x[0]  # equal values: exact variance 0, the rounding alone is left
        exact_mean = math.fsum(x.astype(np.float64)) / n
        exact = math.fsum((x.astype(np.float64) - exact_mean) ** 2) / n
        exact_square = math.fsum(x.astype(np.float64) ** 2) / n
        for dtype in (np.float32, np.float64):
            acc = [dtype(0), dtype(0)]
            for v in x.astype(dtype):
                acc[0] = dtype(acc[0] + v)
                acc[1] = dtype(acc[1] + dtype(v * v))
            for total, squares in ((acc[0], acc[1]),
                                   (np.sum(x.astype(dtype)), np.sum(x.astype(dtype) ** 2))):
                mean, mean_square = dtype(total / dtype(n)), dtype(squares / dtype(n))
                var = dtype(mean_square - dtype(mean * mean))
                ratio = abs(float(var) - exact) / exact_square
                worst = max(worst, ratio)
                assert ratio <= variance_slack(n)
    assert worst < variance_slack(n)


def _onnxruntime_unary(op: str, x: np.ndarray, exponent: float | None = None) -> np.ndarray:
    """onnxruntime's float32 ``op`` (Pow with a constant exponent) at the points ``x``."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    inputs, inits = ["x"], []
    if exponent is not None:
        inputs.append("p")
        inits.append(numpy_helper.from_array(np.array(exponent, np.float32), "p"))
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString())
    return session.run(None, {"x": x.astype(np.float32)})[0]


def _tiny_and_ordinary(seed: int = 0) -> np.ndarray:
    """Float32 points from subnormal to 1e12 in magnitude, both signs, and their neighbours."""
    rng = np.random.default_rng(seed)
    x = (rng.choice([-1.0, 1.0], 4000) * 10.0 ** rng.uniform(-45, 12, 4000)).astype(np.float32)
    return np.concatenate([x, np.nextafter(x, np.float32(0)), np.float32([0.0, -0.0])])


@pytest.mark.parametrize("exponent", [2.0, 3.0])
def test_small_powers_stay_within_their_allowance(exponent):
    """onnxruntime's x^2 and x^3 (tiny results underflowing to subnormals or 0 included) are
    within 3u |y| + 2^-126 of the exact power: the allowance of ``Rounding.POWER``, which no
    longer carries the generic absolute term 2^-21."""
    from bounds.engine.rounding import power_error

    x = _tiny_and_ordinary()
    x = x[np.abs(x.astype(np.float64)) ** exponent < 3e38]  # finite in float32
    got = _onnxruntime_unary("Pow", x, exponent).astype(np.float64)
    exact = x.astype(np.float64) ** exponent
    allowance = power_error(torch.as_tensor(np.abs(exact))).numpy()
    assert bool((np.abs(got - exact) <= allowance).all())


def test_square_root_meets_its_floor():
    """onnxruntime's Sqrt at float32 points x >= l is at least the floor of Sqrt over [l, x]
    (sqrt(l) less 2u, rounded down), at l = x itself: the tightest case."""
    from bounds.registry import rules

    x = np.abs(_tiny_and_ordinary(1))
    got = _onnxruntime_unary("Sqrt", x).astype(np.float64)
    point = torch.as_tensor(x.astype(np.float64))
    node = Node("r", "Sqrt", ("x",), (len(x),))
    floor = rules().get("Sqrt").floor(node, [Interval(point, point)]).numpy()
    assert bool((got >= floor).all())


def test_layer_norm_of_a_constant_zero_token_is_bounded():
    """A class token of zeros next to the patches (DeiT at its initial weights) through a
    LayerNorm with epsilon 1e-12: the zero token's variance is exactly 0, and the generic
    allowance of the squares (2^-21) took it below -epsilon, so the Sqrt reached 0 and the
    Reciprocal after it stopped every bound pass. Now the token's normalised values are
    bounded (0), and the bounds enclose sampled points in float64 and float32."""
    width, eps = 8, np.float32(1e-12)
    shape, col = (1, 2, width), (1, 2, 1)
    nodes = [
        Node("tokens", "Concat", (None, "x"), shape, {"axis": 1},
             {0: np.zeros((1, 1, width), np.float32)}),
        Node("mean", "ReduceMean", ("tokens",), col, {"axes": (2,), "keepdims": 1}),
        Node("centred", "Sub", ("tokens", "mean"), shape),
        Node("square", "Pow", ("centred",), shape, {"exponent": 2.0}),
        Node("var", "ReduceMean", ("square",), col, {"axes": (2,), "keepdims": 1}),
        Node("var_eps", "Add", ("var", None), col, {}, {1: np.full((1, 1, 1), eps)}),
        Node("std", "Sqrt", ("var_eps",), col),
        Node("inverse", "Reciprocal", ("std",), col),
        Node("normed", "Mul", ("centred", "inverse"), shape),
    ]
    graph = Graph((TensorInfo("x", (1, 1, width)),), (TensorInfo("normed", shape),),
                  tuple(nodes))
    gen = torch.Generator().manual_seed(3)
    centre = torch.randn((1, 1, width), generator=gen, dtype=F64)
    box = Interval((centre - 0.1).float().double(), (centre + 0.1).float().double())
    bounds = ibp_bounds(graph, box)
    assert float(bounds["std"].lower.reshape(2)[0]) >= 0.99e-6
    zero_token = bounds["normed"]
    assert float(zero_token.lower.reshape(2, width)[0].abs().max()) == 0.0
    assert float(zero_token.upper.reshape(2, width)[0].abs().max()) == 0.0
    _assert_encloses(graph, box, bounds)
