"""The floor of a variance over a box (``floors.centred_square_floor``, the CentredVariance
node of ``verifier.ir.passes.floor_variances``): the least mean of (x - mean x)^2 over the
box, which the runtime's float32 value never goes below. Checked against a dense search
for the minimum, against onnxruntime's float32 variance at sampled points and at the box's
minimiser (where the floor is tightest), and through IBP on a decomposed LayerNorm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.engine.ibp import ibp_bounds
from bounds.graph import Graph, Node, TensorInfo
from bounds.rules.floors import centred_square_floor
from tests.bounds.test_floors import _assert_encloses, _box, _layer_norm
from verifier.ir.passes import floor_variances

F64 = torch.float64


def _random_boxes(seed: int, n: int, groups: int = 64, spread: float = 3.0, width: float = 1.0):
    """[groups, n] boxes with float32 ends: centres spread by ``spread``, widths up to
    ``width`` (some of zero width)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(groups, n)) * spread + rng.normal(size=(groups, 1)) * 10
    half = rng.uniform(0, width, size=(groups, n)) * (rng.random((groups, n)) < 0.9)
    lo = torch.as_tensor((centre - half).astype(np.float32), dtype=F64)
    hi = torch.as_tensor((centre + half).astype(np.float32), dtype=F64)
    return lo, hi


def _grid(lo: torch.Tensor, hi: torch.Tensor, points: int) -> tuple:
    """Centres c on a grid over each row's span, and mean dist(c, [l_i, u_i])^2 at each."""
    left, right = lo.amin(-1, keepdim=True), hi.amax(-1, keepdim=True)
    c = left + (right - left) * torch.linspace(0, 1, points, dtype=F64)
    c3 = c.unsqueeze(-1)
    gap = torch.relu(c3 - hi.unsqueeze(1)) + torch.relu(lo.unsqueeze(1) - c3)
    return c, (gap * gap).mean(-1)


def _dense_minimum(lo: torch.Tensor, hi: torch.Tensor, points: int = 20001) -> torch.Tensor:
    """The least grid value per row: an upper bound of the box's least variance, within
    (grid step)^2-ish of it."""
    return _grid(lo, hi, points)[1].amin(-1)


@pytest.mark.parametrize("n,spread,width", [(2, 1.0, 0.5), (5, 3.0, 1.0), (16, 0.5, 2.0),
                                            (32, 1e-3, 1e-4), (7, 100.0, 30.0)])
def test_floor_is_below_and_close_to_the_least_variance(n, spread, width):
    lo, hi = _random_boxes(n, n, spread=spread, width=width)
    floor = centred_square_floor(lo, hi, (1,)).squeeze(-1)
    best = _dense_minimum(lo, hi)
    assert bool((floor <= best).all())
    # the grid's own error (c within step s of the optimum costs at most s^2: g'' <= 2) and
    # the floor's float32 margin, 2 (n + 6) u
    step = (hi.amax(-1) - lo.amin(-1)) / 20000
    margin = 2 * (n + 6) * 2.0**-24 + 1e-9
    assert bool((floor >= best * (1 - margin) - 2 * step**2).all())
    assert bool((floor > 0).any())


def test_overlapping_intervals_give_zero_and_infinite_ends_no_floor():
    lo = torch.tensor([[0.0, 0.5, -1.0], [0.0, 0.0, -math.inf]], dtype=F64)
    hi = torch.tensor([[1.0, 2.0, 0.75], [1.0, 1.0, 0.0]], dtype=F64)
    floor = centred_square_floor(lo, hi, (1,)).flatten()
    assert floor[0].item() == 0.0
    assert floor[1].item() == -math.inf


def test_points_give_their_own_variance():
    """A box of single points: the floor is their variance, less the float32 margin."""
    x = torch.tensor([[1.0, 2.0, 4.0, 7.0]], dtype=F64)
    floor = centred_square_floor(x, x, (1,)).item()
    exact = float(x.var(unbiased=False))
    assert exact * (1 - 1e-5) <= floor <= exact


def _variance_session(n: int):
    """onnxruntime's float32 mean((x - mean x)^2) over the last axis (as exported, opset 17):
    ReduceMean, Sub, Pow 2, ReduceMean."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["s"]),
             helper.make_node("ReduceMean", ["s"], ["v"], axes=[-1], keepdims=1)]
    graph = helper.make_graph(nodes, "var", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, n])], [helper.make_tensor_value_info(
            "v", TensorProto.FLOAT, [None, 1])], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnxruntime.InferenceSession(model.SerializeToString())


@pytest.mark.parametrize("n,spread,width", [(4, 1.0, 0.3), (24, 2.0, 1.0), (96, 1e-2, 3e-3),
                                            (16, 1e3, 1e2)])
def test_onnxruntime_variance_never_below_the_floor(n, spread, width):
    """Float32 points of each box (random, corners, the minimiser x_i = clip(c*, l_i, u_i) and
    its float32 neighbours) through onnxruntime: each variance >= the box's floor."""
    lo, hi = _random_boxes(100 + n, n, groups=40, spread=spread, width=width)
    floor = centred_square_floor(lo, hi, (1,)).squeeze(-1)
    session = _variance_session(n)
    rng = np.random.default_rng(n)
    c, costs = _grid(lo, hi, 4001)
    centre = c.gather(1, costs.argmin(-1, keepdim=True))
    lo32, hi32 = lo.numpy().astype(np.float32), hi.numpy().astype(np.float32)
    tight = np.clip(centre.numpy().astype(np.float32), lo32, hi32)
    points = [tight, np.clip(np.nextafter(tight, np.float32(np.inf)), lo32, hi32),
              np.clip(np.nextafter(tight, np.float32(-np.inf)), lo32, hi32)]
    for _ in range(30):
        t = rng.random(lo32.shape)
        t[:, : n // 2] = t[:, : n // 2].round()
        points.append(np.clip(lo32 + (hi32 - lo32) * t.astype(np.float32), lo32, hi32))
    for x in points:
        got = session.run(None, {"x": x})[0].reshape(-1).astype(np.float64)
        assert bool((torch.as_tensor(got) >= floor).all()), (got - floor.numpy()).min()


def test_pass_floors_a_decomposed_layer_norm_once():
    graph = floor_variances(_layer_norm())
    ops = {n.name: n for n in graph.nodes}
    assert ops["var"].op == "CentredVariance" and ops["var"].inputs == ("var/squares", "lin")
    assert ops["var/squares"].op == "ReduceMean"
    again = floor_variances(graph)
    assert [n.op for n in again.nodes] == [n.op for n in graph.nodes]


def _lookalike(kind: str) -> Graph:
    """Means of squares that are not a variance of their centred input."""
    shape, col = (1, 3, 8), (1, 3, 1)
    mean_axes = (1,) if kind == "axes" else (2,)
    nodes = [Node("mean", "ReduceMean", ("x",), (1, 1, 8) if kind == "axes" else col,
                  {"axes": mean_axes, "keepdims": 1}),
             Node("y", "Relu", ("x",), shape),
             Node("centred", "Sub", ("y" if kind == "other" else "x", "mean"), shape),
             Node("square", "Pow", ("centred",), shape,
                  {"exponent": 3.0 if kind == "cube" else 2.0}),
             Node("var", "ReduceMean", ("square",), col, {"axes": (2,), "keepdims": 1})]
    return Graph((TensorInfo("x", shape),), (TensorInfo("var", col),), tuple(nodes))


@pytest.mark.parametrize("kind", ["axes", "other", "cube"])
def test_pass_leaves_lookalikes(kind):
    graph = floor_variances(_lookalike(kind))
    assert "CentredVariance" not in {n.op for n in graph.nodes}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floor_tightens_the_layer_norm_interval(seed):
    """Narrow boxes of a LayerNorm's input: with the floor, IBP's variance lower end rises
    (the squares of centred intervals forget their common centre), the bounds of every value
    enclose sampled points in float64 and float32, and nothing gets looser."""
    plain = _layer_norm()
    floored = floor_variances(plain)
    box = _box(24, 0.05, seed)
    before, after = ibp_bounds(plain, box), ibp_bounds(floored, box)
    assert bool((after["var"].lower > before["var"].lower * 1.05).any())
    for name in ("var", "std", "normed"):
        assert bool((after[name].lower >= before[name].lower - 1e-12).all())
        assert bool((after[name].upper <= before[name].upper + 1e-12).all())
    _assert_encloses(floored, box, after)


def test_imported_layer_normalization_carries_the_floor(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from verifier.onnx_import.loader import load_model

    scale = numpy_helper.from_array(np.ones(8, np.float32), "g")
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-1)], "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "ln.onnx")
    ops = [n.op for n in load_model(tmp_path / "ln.onnx").graph.nodes]
    assert ops.count("CentredVariance") == 1
