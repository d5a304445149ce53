"""ArgMax read from pairwise score differences (bounds/rules/argmax_pairs.py): the rewrite
finds the scores (behind a Softmax through layout ops, with the margin; else the ArgMax's own
input), the rewritten graph computes what onnxruntime computes, and the ArgMax interval that
the engine forms over a box holds onnxruntime's ArgMax at points sampled in the box; where
two scores move together it decides what the interval rule cannot."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.rules.argmax_pairs import SOFTMAX_MARGIN
from bounds.rules.rewrites import bound_graph
from bounds.types import Interval
from tests.onnx_import.onnx_util import make_model, ort_outputs, rand
from verifier.onnx_import.loader import import_proto

N_POINTS = 256


def _segmenter() -> onnx.ModelProto:
    """A carvana-like head: Conv, Relu, 1x1 Conv to 2 classes, Softmax over the classes in
    NHWC (Transpose, Softmax, Transpose back), Gather of the batch, ArgMax over classes."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["logits"]),
        helper.make_node("Transpose", ["logits"], ["t1"], perm=[0, 3, 2, 1]),
        helper.make_node("Softmax", ["t1"], ["p"], axis=3),
        helper.make_node("Transpose", ["p"], ["t2"], perm=[0, 3, 2, 1]),
        helper.make_node("Gather", ["t2", "zero"], ["g"], axis=0),
        helper.make_node("ArgMax", ["g"], ["a"], axis=0, keepdims=0),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = {"w1": rand(4, 3, 3, 3, seed=2), "b1": rand(4, seed=3),
             "w2": rand(2, 4, 1, 1, seed=4), "b2": np.array([0.3, -0.2], np.float32),
             "zero": np.array(0, np.int64)}
    return make_model(nodes, {"x": (1, 3, 4, 5)}, ["y"], inits)


def _permuted_logits() -> onnx.ModelProto:
    """Gemm to 4 logits, the classes reordered by a Gather, ArgMax keeping the axis and
    taking the last of tied indices."""
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1),
        helper.make_node("Gather", ["logits", "perm"], ["g"], axis=1),
        helper.make_node("ArgMax", ["g"], ["a"], axis=1, keepdims=1, select_last_index=1),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = {"w": rand(8, 6, seed=5), "b": rand(8, seed=6), "w2": rand(4, 8, seed=7),
             "b2": rand(4, seed=8), "perm": np.array([2, 0, 3, 1], np.int64)}
    return make_model(nodes, {"x": (1, 6)}, ["y"], inits)


def _partial_softmax() -> onnx.ModelProto:
    """ArgMax over 3 of a Softmax's 4 outputs: not whole rows, so no margin route."""
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["p"], axis=1),
        helper.make_node("Slice", ["p", "s", "e", "ax"], ["part"]),
        helper.make_node("ArgMax", ["part"], ["a"], axis=1, keepdims=0),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = {"w": rand(4, 5, seed=9), "b": rand(4, seed=10), "s": np.array([1], np.int64),
             "e": np.array([4], np.int64), "ax": np.array([1], np.int64)}
    return make_model(nodes, {"x": (1, 5)}, ["y"], inits)


def _tied_scores() -> onnx.ModelProto:
    """Two scores that move together: y0 = s, y1 = s + 0.5 + 0.01 x1 with s = 3 x0 + 2 x1;
    class 1 wins everywhere in [-1, 1]^2, while both intervals are about [-5.5, 5.5]."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["s"], transB=1),
             helper.make_node("ArgMax", ["s"], ["a"], axis=1, keepdims=0),
             helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)]
    inits = {"w": np.array([[3.0, 2.0], [3.0, 2.01]], np.float32),
             "b": np.array([0.0, 0.5], np.float32)}
    return make_model(nodes, {"x": (1, 2)}, ["y"], inits)


def _input_argmax() -> onnx.ModelProto:
    """ArgMax of the model's input itself."""
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=0),
             helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)]
    return make_model(nodes, {"x": (1, 3)}, ["y"])


MODELS = {  # name: (model, margin of the rewritten node)
    "segmenter": (_segmenter, SOFTMAX_MARGIN),
    "permuted_logits": (_permuted_logits, 0.0),
    "partial_softmax": (_partial_softmax, 0.0),
    "tied_scores": (_tied_scores, 0.0),
    "input_argmax": (_input_argmax, 0.0),
}


def _imported(build):
    model = build()
    data = model.SerializeToString()
    return model, import_proto(onnx.load_model_from_string(data), data, simplify=True)


def _argmax_node(graph):
    return next(n for n in graph.nodes if n.op in ("ArgMax", "PairArgMax"))


def _onnx_argmax(model, imported, xs: np.ndarray) -> np.ndarray:
    shape = imported.onnx_input_shapes[0]
    feeds = [{imported.input_names[0]: x.reshape(shape).astype(np.float32)} for x in xs]
    return np.stack([r[0] for r in ort_outputs(model, feeds)]).reshape(len(xs), -1)


@pytest.mark.parametrize("name", list(MODELS))
def test_rewrite_finds_the_scores(name):
    build, margin = MODELS[name]
    _, imported = _imported(build)
    rewritten = bound_graph(imported.graph)
    node = _argmax_node(rewritten)
    assert node.op == "PairArgMax"
    assert node.attrs["margin"] == margin
    assert node.name == _argmax_node(imported.graph).name  # consumers read the same value
    if margin:  # the Softmax route drops the Softmax and the layout ops after it
        assert "Softmax" not in rewritten.op_types


@pytest.mark.parametrize("name", list(MODELS))
def test_rewritten_graph_computes_what_onnxruntime_does(name):
    build, _ = MODELS[name]
    model, imported = _imported(build)
    graph = bound_graph(imported.graph)
    xs = np.random.default_rng(0).uniform(-1, 1, (N_POINTS, *graph.inputs[0].shape))
    ours = run_graph(graph, torch.as_tensor(xs.astype(np.float32)))[0]
    ref = _onnx_argmax(model, imported, xs)
    np.testing.assert_array_equal(ours.numpy().reshape(ref.shape), ref)


def _boxes(shape, rng):
    for width in (0.0, 1e-3, 0.05, 0.5, 2.0):
        centre = rng.uniform(-1, 1, shape)
        radius = rng.uniform(0, width, shape)
        yield centre - radius, centre + radius


@pytest.mark.parametrize("name", list(MODELS))
def test_argmax_interval_holds_onnxruntime(name):
    """Property test: at points sampled in a box (and its vertices' neighbourhood), every
    ArgMax onnxruntime computes lies in the engine's interval of the node (CROWN run)."""
    build, _ = MODELS[name]
    model, imported = _imported(build)
    graph = bound_graph(imported.graph)
    shape = graph.inputs[0].shape
    node = _argmax_node(graph)
    rng = np.random.default_rng(1)
    for lo, hi in _boxes(shape, rng):
        box = Interval(torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])
        inter = compute_intermediate(graph, box, method="crown")
        bound = inter.bounds[node.name]
        u = rng.uniform(0, 1, (N_POINTS, *shape))
        u[: N_POINTS // 4] = np.round(u[: N_POINTS // 4])  # vertices
        xs = lo + u * (hi - lo)
        got = _onnx_argmax(model, imported, xs)
        low = bound.lower.reshape(1, -1).numpy()
        high = bound.upper.reshape(1, -1).numpy()
        assert ((got >= low) & (got <= high)).all(), (name, lo, hi)


def test_pairs_decide_what_intervals_cannot():
    """Scores that move together: the ArgMax's own interval rule leaves [0, 1], the pair
    differences fix the winner."""
    _, imported = _imported(_tied_scores)
    box = Interval(-torch.ones(1, 1, 2, dtype=torch.float64),
                   torch.ones(1, 1, 2, dtype=torch.float64))
    name = _argmax_node(imported.graph).name
    plain = compute_intermediate(imported.graph, box, method="crown").bounds[name]
    pairs = compute_intermediate(bound_graph(imported.graph), box, method="crown").bounds[name]
    assert (float(plain.lower), float(plain.upper)) == (0.0, 1.0)
    assert (float(pairs.lower), float(pairs.upper)) == (1.0, 1.0)


def test_segmenter_softmax_margin_is_applied():
    """Behind a Softmax a difference inside the margin decides nothing: two equal logits
    (a 1x1 Conv whose classes differ by 2**-10) leave both classes possible."""
    model = _segmenter()
    for init in model.graph.initializer:
        if init.name == "w2":
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros((2, 4, 1, 1), np.float32),
                                                       "w2"))
        if init.name == "b2":
            init.CopyFrom(onnx.numpy_helper.from_array(
                np.array([0.0, 2.0**-10], np.float32), "b2"))
    data = model.SerializeToString()
    graph = bound_graph(import_proto(onnx.load_model_from_string(data), data).graph)
    x = torch.zeros(1, 1, 3, 4, 5, dtype=torch.float64)
    inter = compute_intermediate(graph, Interval(x, x), method="crown")
    bound = inter.bounds[_argmax_node(graph).name]
    assert bool((bound.lower == 0).all()) and bool((bound.upper == 1).all())


def test_values_after_the_step_are_not_refined():
    """CROWN meets a step op's output as a box of its interval: the values after PairArgMax
    count as exact (no refinement), its input D does not."""
    from bounds.engine.analysis import relaxed_inputs, values_ibp_bounds_exactly

    model = _segmenter()
    cast = next(n for n in model.graph.node if n.op_type == "Cast")
    cast.output[0] = "af"
    model.graph.node.extend([
        helper.make_node("Transpose", ["af"], ["t"], perm=[1, 0]),
        helper.make_node("Mul", ["t", "two"], ["y"])])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(2.0), "two"))
    data = model.SerializeToString()
    graph = bound_graph(import_proto(onnx.load_model_from_string(data), data).graph)
    node = _argmax_node(graph)
    exact = values_ibp_bounds_exactly(graph)
    need = set(relaxed_inputs(graph)) - exact
    assert node.name in exact
    assert node.inputs[0] in need
    after = [n.name for n in graph.nodes if node.name in n.inputs]
    assert after and all(name in exact for name in after)
