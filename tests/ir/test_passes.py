"""Graph passes: the simplified graph computes the same as the unsimplified one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from bounds.engine.forward import run_graph
from bounds.graph import Graph, Node, TensorInfo
from tests.onnx_import.onnx_util import compare, make_model, rand
from verifier.ir.passes import clip_to_relu, drop_dead_nodes, simplify_graph
from verifier.onnx_import.loader import import_proto


def _both(model: onnx.ModelProto):
    data = model.SerializeToString()
    raw = import_proto(onnx.load_model_from_string(data), data, simplify=False).graph
    return raw, simplify_graph(raw)


def _same(a: Graph, b: Graph, low=-1.0, high=1.0, tol=1e-5):
    x = torch.from_numpy(np.random.default_rng(0).uniform(
        low, high, (5, *a.inputs[0].shape)).astype(np.float32))
    for ya, yb in zip(run_graph(a, x), run_graph(b, x), strict=True):
        assert torch.allclose(ya, yb, atol=tol, rtol=tol)


def _ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def test_matmul_add_fuses_to_linear():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["y"])]
    raw, simple = _both(make_model(nodes, {"x": (1, 4)}, ["y"], {"w": rand(4, 3), "b": rand(3)}))
    assert _ops(simple) == ["Linear"] and 2 in simple.nodes[0].consts
    _same(raw, simple)


def test_conv_bias_add_and_batchnorm_fold_into_conv():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "cb"], ["a"]),
             helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["y"])]
    inits = {"w": rand(4, 2, 3, 3), "cb": rand(1, 4, 1, 1), "s": rand(4), "b": rand(4),
             "m": rand(4), "v": rand(4, low=0.5, high=1.5)}
    model = make_model(nodes, {"x": (1, 2, 5, 5)}, ["y"], inits)
    raw, simple = _both(model)
    assert _ops(simple) == ["Conv"]
    _same(raw, simple)
    compare(model)


def test_batchnorm_with_two_consumers_stays_mul_add():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Add", ["r", "n"], ["y"])]
    inits = {"w": rand(2, 2, 1, 1), "s": rand(2), "b": rand(2), "m": rand(2),
             "v": rand(2, low=0.5, high=1.5)}
    raw, simple = _both(make_model(nodes, {"x": (1, 2, 3, 3)}, ["y"], inits))
    assert "Mul" in _ops(simple)
    _same(raw, simple)


def test_input_normalisation_folds_into_first_linear():
    nodes = [helper.make_node("Sub", ["x", "m"], ["s"]),
             helper.make_node("Div", ["s", "d"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    inits = {"m": np.full((1, 1, 1, 1), 0.13, np.float32),
             "d": np.full((1, 1, 1, 1), 0.31, np.float32), "w": rand(3, 8), "b": rand(3)}
    raw, simple = _both(make_model(nodes, {"x": (1, 2, 2, 2)}, ["y"], inits))
    assert _ops(simple) == ["Reshape", "Linear"]
    _same(raw, simple)


def test_per_channel_normalisation_into_unpadded_conv_only():
    def model(pads):
        nodes = [helper.make_node("Sub", ["x", "m"], ["s"]),
                 helper.make_node("Div", ["s", "d"], ["n"]),
                 helper.make_node("Conv", ["n", "w"], ["y"], pads=pads)]
        inits = {"m": rand(1, 3, 1, 1), "d": rand(1, 3, 1, 1, low=0.5, high=2.0),
                 "w": rand(2, 3, 2, 2)}
        return make_model(nodes, {"x": (1, 3, 4, 4)}, ["y"], inits)

    raw, simple = _both(model([0, 0, 0, 0]))
    assert _ops(simple) == ["Conv"]
    _same(raw, simple)
    raw, simple = _both(model([1, 1, 1, 1]))
    assert _ops(simple) == ["Sub", "Conv"]  # Div folds, Sub would change the zero padding
    _same(raw, simple)


def test_clip_zero_inf_becomes_relu():
    node = Node("c", "Clip", ("x",), (1, 3), {"min": 0.0, "max": float("inf")})
    g = Graph((TensorInfo("x", (1, 3)),), (TensorInfo("c", (1, 3)),), (node,))
    assert _ops(clip_to_relu(g)) == ["Relu"]
    bounded = Node("c", "Clip", ("x",), (1, 3), {"min": 0.0, "max": 6.0})
    g = Graph((TensorInfo("x", (1, 3)),), (TensorInfo("c", (1, 3)),), (bounded,))
    assert _ops(clip_to_relu(g)) == ["Clip"]


def test_noop_and_chained_reshapes_and_dead_nodes():
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Reshape", ["i", "s1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
             helper.make_node("Split", ["x", "sp"], ["a", "b"], axis=1),
             helper.make_node("Relu", ["r2"], ["y"])]
    inits = {"s1": np.array([1, 6], np.int64), "s2": np.array([2, 3], np.int64),
             "sp": np.array([3, 3], np.int64)}
    raw, simple = _both(make_model(nodes, {"x": (1, 6)}, ["y"], inits))
    assert _ops(simple) == ["Reshape", "Relu"]
    _same(raw, simple)
    assert drop_dead_nodes(simple) is simple


def _gelu_nodes(scale_op: str, product_order: tuple[str, str]):
    scale = (helper.make_node("Div", ["h", "sqrt2"], ["d"]) if scale_op == "Div"
             else helper.make_node("Mul", ["h", "inv_sqrt2"], ["d"]))
    return [helper.make_node("MatMul", ["x", "w"], ["h"]), scale,
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]),
            helper.make_node("Mul", list(product_order), ["p"]),
            helper.make_node("Mul", ["p", "half"], ["y"])]


@pytest.mark.parametrize("scale_op", ["Div", "Mul"])
@pytest.mark.parametrize("order", [("h", "a"), ("a", "h")])
def test_exported_gelu_decomposition_fuses_to_gelu(scale_op, order):
    consts = {"w": rand(4, 3), "sqrt2": np.float32(2 ** 0.5), "inv_sqrt2": np.float32(2 ** -0.5),
              "one": np.float32(1.0), "half": np.float32(0.5)}
    model = make_model(_gelu_nodes(scale_op, order), {"x": (1, 4)}, ["y"], consts, opset=17)
    raw, simple = _both(model)
    assert _ops(simple) == ["Linear", "Gelu"]
    _same(raw, simple, low=-4.0, high=4.0)
    compare(model, low=-4.0, high=4.0)


def test_gelu_lookalike_with_other_constants_is_left_alone():
    consts = {"w": rand(4, 3), "sqrt2": np.float32(1.5), "one": np.float32(1.0),
              "half": np.float32(0.5)}
    model = make_model(_gelu_nodes("Div", ("h", "a")), {"x": (1, 4)}, ["y"], consts, opset=17)
    _, simple = _both(model)
    assert "Gelu" not in _ops(simple)


def _swish_model(gate_input: str, order=("h", "s"), alpha=None):
    """Linear -> h * Sigmoid(gate_input) -> Linear; gate_input "h", "ah" (h * alpha) or "x2"
    (another value)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Mul", ["h", "alpha"], ["ah"]),
             helper.make_node("MatMul", ["x", "w2"], ["x2"]),
             helper.make_node("Sigmoid", [gate_input], ["s"]),
             helper.make_node("Mul", list(order), ["p"]),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    consts = {"w": rand(4, 6), "w2": rand(4, 6, seed=5), "v": rand(6, 2, seed=3),
              "alpha": np.float32(1.0 if alpha is None else alpha)}
    return make_model(nodes, {"x": (1, 4)}, ["y"], consts, opset=17)


@pytest.mark.parametrize("order", [("h", "s"), ("s", "h")])
@pytest.mark.parametrize("gate_input,alpha", [("h", None), ("ah", 1.702), ("ah", 0.25)])
def test_silu_and_scaled_swish_fuse_to_swish(order, gate_input, alpha):
    model = _swish_model(gate_input, order, alpha)
    raw, simple = _both(model)
    assert _ops(simple) == ["Linear", "Swish", "Linear"]
    want = float(np.float32(1.0 if alpha is None else alpha))
    assert simple.nodes[1].attrs["alpha"] == want
    _same(raw, simple, low=-3.0, high=3.0)
    compare(model, low=-3.0, high=3.0)


@pytest.mark.parametrize("gate_input,alpha", [("x2", None), ("ah", -0.5), ("ah", 0.0)])
def test_swish_lookalikes_stay_products(gate_input, alpha):
    raw, simple = _both(_swish_model(gate_input, alpha=alpha))
    assert "Swish" not in _ops(simple) and "Sigmoid" in _ops(simple)
    _same(raw, simple, low=-3.0, high=3.0)


def test_fused_swish_bounds_are_tighter_than_the_products():
    """The point of the fusion: one curve's planes instead of McCormick planes of x and
    sigmoid(x), which forget that both factors move together. Bounds of both graphs enclose
    samples; the fused ones are narrower."""
    from bounds.engine.intermediate import compute_intermediate
    from bounds.types import Interval

    raw, simple = _both(_swish_model("h"))
    centre = torch.from_numpy(rand(1, 4, seed=9)).double()
    box = Interval(centre - 0.4, centre + 0.4)
    out = raw.outputs[0].name
    wide = compute_intermediate(raw, box, method="crown").bounds[out]
    tight = compute_intermediate(simple, box, method="crown").bounds[out]
    x = box.lower + (box.upper - box.lower) * torch.rand((300, 1, 4), dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(2))
    y = run_graph(raw, x)[0]
    for iv in (wide, tight):
        assert bool((y >= iv.lower - 1e-6).all() & (y <= iv.upper + 1e-6).all())
    assert bool((tight.upper - tight.lower <= wide.upper - wide.lower + 1e-9).all())
    assert float((tight.upper - tight.lower).sum()) < 0.8 * float((wide.upper - wide.lower).sum())


def _tanh_gelu_nodes(variant: str, kappa: float = 0.044715):
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + kappa x^3))) after a MatMul, as exporters write it:
    "torch" (torch.onnx's decomposition: (x 0.5) (1 + tanh(k (x + kappa Pow(x, 3))))), "hf"
    (GPT-2's gelu_new as traced: 0.5 x, x * x * x, the scale distributed over the sum)."""
    h = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    if variant == "torch":
        return h + [helper.make_node("Pow", ["h", "three"], ["c"]),
                    helper.make_node("Mul", ["kappa", "c"], ["kc"]),
                    helper.make_node("Add", ["h", "kc"], ["s"]),
                    helper.make_node("Mul", ["k", "s"], ["v"]),
                    helper.make_node("Tanh", ["v"], ["t"]),
                    helper.make_node("Add", ["one", "t"], ["a"]),
                    helper.make_node("Mul", ["h", "half"], ["hh"]),
                    helper.make_node("Mul", ["hh", "a"], ["y"])]
    return h + [helper.make_node("Mul", ["h", "h"], ["h2"]),
                helper.make_node("Mul", ["h2", "h"], ["c"]),
                helper.make_node("Mul", ["c", "kappa"], ["kc"]),
                helper.make_node("Mul", ["h", "k"], ["kh"]),
                helper.make_node("Mul", ["kc", "k"], ["kkc"]),
                helper.make_node("Add", ["kh", "kkc"], ["v"]),
                helper.make_node("Tanh", ["v"], ["t"]),
                helper.make_node("Add", ["t", "one"], ["a"]),
                helper.make_node("Mul", ["half", "h"], ["hh"]),
                helper.make_node("Mul", ["a", "hh"], ["y"])]


def _tanh_gelu_consts(kappa: float = 0.044715) -> dict:
    return {"w": rand(4, 3), "three": np.float32(3.0), "kappa": np.float32(kappa),
            "k": np.float32((2 / np.pi) ** 0.5), "one": np.float32(1.0),
            "half": np.float32(0.5)}


@pytest.mark.parametrize("variant", ["torch", "hf"])
def test_tanh_gelu_decompositions_fuse_to_gelu_tanh(variant):
    model = make_model(_tanh_gelu_nodes(variant), {"x": (1, 4)}, ["y"], _tanh_gelu_consts(),
                       opset=17)
    raw, simple = _both(model)
    assert _ops(simple) == ["Linear", "Gelu"]
    assert simple.nodes[1].attrs["approximate"] == "tanh"
    _same(raw, simple, low=-4.0, high=4.0)
    compare(model, low=-4.0, high=4.0)


@pytest.mark.parametrize("kappa", [0.05, 0.044716])
def test_tanh_gelu_lookalike_with_another_cubic_term_is_left_alone(kappa):
    # (0.044716: 2.2e-5 relative off, 8e-7 absolute in the coefficient k kappa)
    model = make_model(_tanh_gelu_nodes("torch"), {"x": (1, 4)}, ["y"],
                       _tanh_gelu_consts(kappa=kappa), opset=17)
    raw, simple = _both(model)
    assert "Gelu" not in _ops(simple) and "Tanh" in _ops(simple)
    _same(raw, simple, low=-4.0, high=4.0)


def _hard_swish_nodes(variant: str) -> tuple[list, dict]:
    """x HardSigmoid(x) (torch.onnx before opset 14), x Relu6(x + 3) / 6 (Keras's
    hard_swish), Relu6(3 + x) (1/6) x, and lookalikes: a Relu6 divided by 5, a plain Relu."""
    n = helper.make_node
    h = [n("MatMul", ["x", "w"], ["h"])]
    consts = {"w": rand(4, 3), "three": np.float32(3.0), "zero": np.float32(0.0),
              "six": np.float32(6.0), "sixth": np.float32(1 / 6), "five": np.float32(5.0)}
    if variant == "hardsigmoid":
        return h + [n("HardSigmoid", ["h"], ["g"], alpha=1 / 6, beta=0.5),
                    n("Mul", ["h", "g"], ["y"])], consts
    relu6 = [n("Add", ["h", "three"] if variant != "mul_sixth" else ["three", "h"], ["s"]),
             n("Clip", ["s", "zero", "six"], ["g"])]
    if variant == "div_six":
        return h + relu6 + [n("Mul", ["h", "g"], ["p"]), n("Div", ["p", "six"], ["y"])], consts
    if variant == "mul_sixth":
        return h + relu6 + [n("Mul", ["g", "sixth"], ["q"]), n("Mul", ["q", "h"], ["y"])], consts
    if variant == "div_five":
        return h + relu6 + [n("Mul", ["h", "g"], ["p"]), n("Div", ["p", "five"], ["y"])], consts
    return h + [n("Relu", ["h"], ["g"]), n("Mul", ["h", "g"], ["y"])], consts


@pytest.mark.parametrize("variant", ["hardsigmoid", "div_six", "mul_sixth"])
def test_hard_swish_decompositions_fuse(variant):
    nodes, consts = _hard_swish_nodes(variant)
    model = make_model(nodes, {"x": (1, 4)}, ["y"], consts, opset=13)
    raw, simple = _both(model)
    assert _ops(simple) == ["Linear", "HardSwish"]
    attrs = simple.nodes[1].attrs
    assert abs(attrs["alpha"] - 1 / 6) < 1e-7 and abs(attrs["beta"] - 0.5) < 1e-7
    _same(raw, simple, low=-8.0, high=8.0)
    compare(model, low=-8.0, high=8.0)


@pytest.mark.parametrize("variant", ["div_five", "relu"])
def test_hard_swish_lookalikes_stay_products(variant):
    nodes, consts = _hard_swish_nodes(variant)
    raw, simple = _both(make_model(nodes, {"x": (1, 4)}, ["y"], consts, opset=13))
    assert "HardSwish" not in _ops(simple)
    _same(raw, simple, low=-8.0, high=8.0)


@pytest.mark.parametrize("order", [("h", "t"), ("t", "h")])
def test_mish_decomposition_fuses_and_a_lookalike_does_not(order):
    def model(gate_of: str):
        n = helper.make_node
        return make_model([n("MatMul", ["x", "w"], ["h"]), n("MatMul", ["x", "w2"], ["h2"]),
                           n("Softplus", [gate_of], ["s"]), n("Tanh", ["s"], ["t"]),
                           n("Mul", list(order), ["y"])], {"x": (1, 4)}, ["y"],
                          {"w": rand(4, 3), "w2": rand(4, 3, seed=4)}, opset=17)

    raw, simple = _both(model("h"))
    assert _ops(simple) == ["Linear", "Mish"]
    _same(raw, simple, low=-6.0, high=6.0)
    compare(model("h"), low=-6.0, high=6.0)
    raw, simple = _both(model("h2"))
    assert "Mish" not in _ops(simple)
    _same(raw, simple, low=-6.0, high=6.0)
