"""product_model: several models on shared inputs as one ONNX model, checked in onnxruntime.

Each case runs the product and every model on its own on the same inputs; the product's
outputs must be bit-identical to the models' (the product copies the nodes, only renamed).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_builders import gemm_relu_mlp
from verifier.compose.product import product_model
from verifier.errors import ModelError


def _layers(seed: int, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = zip(sizes[:-1], sizes[1:], strict=True)
    return [(rng.normal(size=(o, i)), rng.normal(size=o)) for i, o in pairs]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _matmul_mlp(seed: int, dtype: int = TensorProto.FLOAT, opset: int = 13,
                ir_version: int = 8, weights_as_inputs: bool = False) -> onnx.ModelProto:
    """x [1, 3] -> MatMul/Add/Relu -> MatMul/Add -> out [1, 2], with the given element type.

    ``weights_as_inputs``: list the initializers among the graph inputs (IR 3 style, as the
    ACAS Xu files do)."""
    npt = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    (w0, b0), (w1, b1) = _layers(seed, [3, 4, 2])
    inits = [numpy_helper.from_array(a.T.astype(npt) if a.ndim == 2 else a.astype(npt), n)
             for a, n in ((w0, "W0"), (b0, "B0"), (w1, "W1"), (b1, "B1"))]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["m0"]),
             helper.make_node("Add", ["m0", "B0"], ["a0"]),
             helper.make_node("Relu", ["a0"], ["h0"]),
             helper.make_node("MatMul", ["h0", "W1"], ["m1"]),
             helper.make_node("Add", ["m1", "B1"], ["out"])]
    inputs = [helper.make_tensor_value_info("x", dtype, [1, 3])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, dtype, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "mm", inputs,
                              [helper.make_tensor_value_info("out", dtype, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def _x(n_in: int, seed: int = 7, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, n_in)).astype(dtype)


def test_two_mlps_with_equal_names_give_each_models_outputs():
    f = gemm_relu_mlp(_layers(0, [4, 8, 3]))
    g = gemm_relu_mlp(_layers(1, [4, 6, 6, 3]))  # same names x, y, w0, ... in both
    product = product_model([f, g], ["f_", "g_"])
    onnx.checker.check_model(product)
    assert [o.name for o in product.graph.output] == ["f_y", "g_y"]
    assert [i.name for i in product.graph.input] == ["x"]
    for seed in range(3):
        x = _x(4, seed)
        got = _run(product, {"x": x})
        np.testing.assert_array_equal(got[0], _run(f, {"x": x})[0])
        np.testing.assert_array_equal(got[1], _run(g, {"x": x})[0])


def test_three_models_and_outputs_in_order():
    models = [gemm_relu_mlp(_layers(s, [2, 5, 2])) for s in range(3)]
    product = product_model(models, ["a/", "b/", "c/"])
    x = _x(2)
    got = _run(product, {"x": x})
    assert [o.name for o in product.graph.output] == ["a/y", "b/y", "c/y"]
    for out, model in zip(got, models, strict=True):
        np.testing.assert_array_equal(out, _run(model, {"x": x})[0])
    assert not np.array_equal(got[0], got[1])  # the models do differ


def test_input_names_may_differ_matched_by_position():
    f = _matmul_mlp(0)
    g = gemm_relu_mlp(_layers(3, [3, 4, 2]))  # its input is renamed "other" below
    g.graph.input[0].name = "other"
    for node in g.graph.node:
        node.input[:] = ["other" if n == "x" else n for n in node.input]
    product = product_model([f, g], ["f_", "g_"])
    x = _x(3)
    got = _run(product, {"x": x})
    np.testing.assert_array_equal(got[1], _run(g, {"other": x})[0])


def test_ir3_model_with_weights_listed_as_inputs():
    f = _matmul_mlp(0, ir_version=3, opset=8, weights_as_inputs=True)
    g = _matmul_mlp(1, ir_version=3, opset=8, weights_as_inputs=True)
    product = product_model([f, g], ["f_", "g_"])
    onnx.checker.check_model(product)
    assert [i.name for i in product.graph.input] == ["x"]
    x = _x(3)
    got = _run(product, {"x": x})
    np.testing.assert_array_equal(got[0], _run(f, {"x": x})[0])
    np.testing.assert_array_equal(got[1], _run(g, {"x": x})[0])


def test_different_opsets_are_converted_to_the_newest():
    f = _matmul_mlp(0, opset=9)
    g = gemm_relu_mlp(_layers(1, [3, 4, 2]), opset=17)
    product = product_model([f, g], ["f_", "g_"])
    assert [(e.domain, e.version) for e in product.opset_import] == [("", 17)]
    x = _x(3)
    got = _run(product, {"x": x})
    np.testing.assert_allclose(got[0], _run(f, {"x": x})[0], rtol=0, atol=0)
    np.testing.assert_array_equal(got[1], _run(g, {"x": x})[0])


def test_float16_model_reads_the_shared_float32_input_through_a_cast():
    f = _matmul_mlp(0)
    g = _matmul_mlp(0, dtype=TensorProto.FLOAT16)
    product = product_model([f, g], ["f_", "g_"])
    casts = [n for n in product.graph.node if n.op_type == "Cast"]
    assert len(casts) == 1 and casts[0].output[0] == "g_x"
    x = _x(3)
    got = _run(product, {"x": x})
    np.testing.assert_array_equal(got[0], _run(f, {"x": x})[0])
    assert got[1].dtype == np.float16
    np.testing.assert_array_equal(got[1], _run(g, {"x": x.astype(np.float16)})[0])


def test_shared_inputs_may_take_another_element_type():
    f = _matmul_mlp(0, dtype=TensorProto.FLOAT16)
    g = _matmul_mlp(1)
    product = product_model([f, g], ["f_", "g_"], input_elem_type=TensorProto.FLOAT)
    assert product.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = _x(3)
    got = _run(product, {"x": x})
    np.testing.assert_array_equal(got[0], _run(f, {"x": x.astype(np.float16)})[0])
    np.testing.assert_array_equal(got[1], _run(g, {"x": x})[0])


def test_different_input_shapes_are_refused_naming_both():
    f = gemm_relu_mlp(_layers(0, [4, 3]))
    g = gemm_relu_mlp(_layers(0, [5, 3]))
    with pytest.raises(ModelError, match=r"input 0: model 0's 'x' has shape \[1, 4\], model 1's"
                                         r" \('g_'\) 'x' has shape \[1, 5\]"):
        product_model([f, g], ["f_", "g_"])


def test_different_input_counts_are_refused():
    f = gemm_relu_mlp(_layers(0, [4, 3]))
    two = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    g = helper.make_model(two, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="model 1 .* has 2 inputs .*model 0 has 1"):
        product_model([f, g], ["f_", "g_"])


@pytest.mark.parametrize("prefixes, message", [
    (["m_", "m_"], "no prefix may start another"),
    (["m", "m2"], "no prefix may start another"),
    (["", "g_"], "must not be empty"),
    (["f_"], "2 models but 1 prefixes"),
])
def test_bad_prefixes_are_refused(prefixes, message):
    f = gemm_relu_mlp(_layers(0, [4, 3]))
    with pytest.raises(ModelError, match=message):
        product_model([f, f], prefixes)


def test_a_prefixed_name_equal_to_a_shared_input_is_refused():
    f = gemm_relu_mlp(_layers(0, [4, 3]))
    f.graph.input[0].name = "g_x"  # the shared input would be g_x, and so would g's bridge
    for node in f.graph.node:
        node.input[:] = ["g_x" if n == "x" else n for n in node.input]
    g = gemm_relu_mlp(_layers(1, [4, 3]))
    with pytest.raises(ModelError, match="'g_x' is made by both"):
        product_model([f, g], ["f_", "g_"])


def test_conflicting_custom_domain_versions_are_refused():
    f = gemm_relu_mlp(_layers(0, [4, 3]))
    g = gemm_relu_mlp(_layers(1, [4, 3]))
    f.opset_import.append(helper.make_opsetid("com.example", 1))
    g.opset_import.append(helper.make_opsetid("com.example", 2))
    with pytest.raises(ModelError, match="domain 'com.example' version 2"):
        product_model([f, g], ["f_", "g_"])


def _one_node(op: str, opset: int, **attrs) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)], op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_an_unconvertible_opset_is_refused_clearly():
    old = _one_node("ImageScaler", 7, scale=2.0)  # experimental op, gone from later opsets
    new = _one_node("Relu", 17)
    with pytest.raises(ModelError, match=r"model 0 \('f_'\) uses operator set 7 and cannot be "
                                         r"converted to 17"):
        product_model([old, new], ["f_", "g_"])
