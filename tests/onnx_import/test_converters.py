"""One-node (or few-node) ONNX models per converter, compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.onnx_import.onnx_util import compare, make_model, one_node, rand
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.loader import import_proto

X4 = {"x": (1, 3, 6, 6)}
X2 = {"x": (1, 5)}
I64 = np.int64


def _i(*v):
    return np.array(v, dtype=I64)


CASES = {
    # arithmetic with constants and two dynamic operands
    "add_const_bcast": lambda: one_node("Add", X4, {"c": rand(3, 1, 1)}),
    "sub_const_left": lambda: one_node("Sub", {}, None) if False else make_model(
        [helper.make_node("Sub", ["c", "x"], ["y"])], X2, ["y"], {"c": rand(5)}),
    "mul_const": lambda: one_node("Mul", X4, {"c": rand(1, 3, 1, 1)}),
    "div_const": lambda: one_node("Div", X4, {"c": rand(6, low=0.5, high=2.0)}),
    "add_two_dyn": lambda: one_node("Add", {"x": (1, 3, 4), "z": (1, 1, 4)}),
    "mul_two_dyn": lambda: one_node("Mul", {"x": (1, 4), "z": (4,)}),
    "div_two_dyn": lambda: one_node("Div", {"x": (1, 4), "z": (1, 4)}),
    "neg": lambda: one_node("Neg", X2),
    "pow2": lambda: one_node("Pow", X2, {"e": np.array(2.0, np.float32)}),
    "where": lambda: one_node("Where", {}, None) if False else make_model(
        [helper.make_node("Where", ["cond", "x", "c"], ["y"])], X2, ["y"],
        {"cond": np.array([True, False, True, False, True]), "c": rand(1, 5)}),
    # Gemm / MatMul
    "gemm_transb": lambda: one_node("Gemm", X2, {"w": rand(4, 5), "b": rand(4)}, transB=1),
    "gemm_alpha_beta": lambda: one_node("Gemm", X2, {"w": rand(5, 3), "b": rand(1, 3)},
                                        alpha=0.5, beta=2.0),
    "gemm_transa": lambda: one_node("Gemm", {"x": (5, 1)}, {"w": rand(5, 3), "b": rand(3)},
                                    transA=1),
    "gemm_no_bias": lambda: one_node("Gemm", X2, {"w": rand(5, 3)}),
    "gemm_dyn_b": lambda: make_model([helper.make_node("Gemm", ["a", "x", "c"], ["y"])],
                                     {"x": (4, 3)}, ["y"], {"a": rand(2, 4), "c": rand(3)}),
    "matmul_const_right": lambda: one_node("MatMul", {"x": (1, 2, 5)}, {"w": rand(5, 3)}),
    "matmul_const_left": lambda: make_model([helper.make_node("MatMul", ["w", "x"], ["y"])],
                                            {"x": (1, 5, 3)}, ["y"], {"w": rand(4, 5)}),
    "matmul_both_dyn": lambda: one_node("MatMul", {"x": (1, 2, 3, 4), "z": (1, 2, 4, 5)}),
    "matmul_1d": lambda: one_node("MatMul", {"x": (4,)}, {"w": rand(4, 3)}),
    "matmul_1d_right": lambda: one_node("MatMul", {"x": (2, 4), "z": (4,)}),
    "matmul_const_3d": lambda: one_node("MatMul", {"x": (1, 2, 5)}, {"w": rand(2, 5, 3)}),
    # convolutions
    "conv2d": lambda: one_node("Conv", X4, {"w": rand(4, 3, 3, 3), "b": rand(4)},
                               pads=[1, 0, 2, 1], strides=[2, 1]),
    "conv2d_groups_dil": lambda: one_node("Conv", {"x": (1, 4, 7, 7)}, {"w": rand(6, 2, 2, 2)},
                                          group=2, dilations=[2, 1]),
    "conv2d_same": lambda: one_node("Conv", X4, {"w": rand(2, 3, 3, 3)}, auto_pad="SAME_UPPER",
                                    strides=[2, 2]),
    "conv1d": lambda: one_node("Conv", {"x": (1, 2, 9)}, {"w": rand(3, 2, 3), "b": rand(3)},
                               pads=[1, 1], strides=[2]),
    "conv_transpose": lambda: one_node("ConvTranspose", {"x": (1, 2, 4, 4)},
                                       {"w": rand(2, 3, 3, 3), "b": rand(3)}, strides=[2, 2],
                                       pads=[1, 0, 0, 1], output_padding=[1, 0]),
    "conv_transpose_group": lambda: one_node("ConvTranspose", {"x": (1, 4, 3, 3)},
                                             {"w": rand(4, 1, 2, 2)}, group=2,
                                             dilations=[2, 1]),
    "conv_transpose_1d_shape": lambda: one_node("ConvTranspose", {"x": (1, 2, 5)},
                                                {"w": rand(2, 2, 3)}, strides=[2],
                                                output_shape=[10]),
    "batchnorm": lambda: one_node("BatchNormalization", X4,
                                  {"s": rand(3), "b": rand(3), "m": rand(3),
                                   "v": rand(3, low=0.5, high=1.5)}, epsilon=1e-3),
    # shape ops
    "flatten": lambda: one_node("Flatten", X4, axis=2),
    "reshape": lambda: one_node("Reshape", X4, {"s": _i(0, -1, 12)}),
    "reshape_v1": lambda: one_node("Reshape", X4, opset=4, shape=[1, 108]),
    "squeeze11": lambda: one_node("Squeeze", {"x": (1, 3, 1, 2)}, opset=11, axes=[2]),
    "squeeze13": lambda: one_node("Squeeze", {"x": (1, 3, 1, 2)}, {"a": _i(-2)}),
    "squeeze_all": lambda: one_node("Squeeze", {"x": (1, 3, 1, 2)}),
    "unsqueeze11": lambda: one_node("Unsqueeze", X2, opset=11, axes=[0, 3]),
    "unsqueeze13": lambda: one_node("Unsqueeze", X2, {"a": _i(1, -1)}),
    "transpose_nhwc": lambda: one_node("Transpose", {"x": (1, 5, 6, 3)}, perm=[0, 3, 1, 2]),
    "transpose_default": lambda: one_node("Transpose", {"x": (2, 3, 4)}),
    "concat_const": lambda: one_node("Concat", {"x": (1, 2, 3), "z": (1, 1, 3)},
                                     {"c": rand(1, 2, 3)}, axis=1),
    "slice9": lambda: one_node("Slice", X4, opset=9, starts=[1, -4], ends=[3, 100],
                               axes=[1, 3]),
    "slice13_steps": lambda: one_node("Slice", X4, {"s": _i(5, 0), "e": _i(-100, 3),
                                                    "a": _i(3, 2), "t": _i(-2, 1)}),
    "split11": lambda: one_node("Split", {"x": (1, 6, 2)}, opset=11, n_out=2, axis=1,
                                split=[2, 4]),
    "split13": lambda: one_node("Split", {"x": (1, 6, 2)}, {"s": _i(1, 5)}, n_out=2, axis=1),
    "split18": lambda: one_node("Split", {"x": (1, 7, 2)}, opset=18, n_out=3, axis=1,
                                num_outputs=3),
    "gather_vec": lambda: one_node("Gather", X4, {"i": _i(2, -1, 0)}, axis=1),
    "gather_scalar": lambda: one_node("Gather", X4, {"i": np.array(3, I64)}, axis=3),
    "expand": lambda: one_node("Expand", {"x": (1, 3, 1)}, {"s": _i(2, 1, 3, 4)}),
    "tile": lambda: one_node("Tile", {"x": (1, 2, 3)}, {"r": _i(1, 3, 2)}),
    # padding, pooling, resizing, reductions
    "pad2": lambda: one_node("Pad", X4, opset=2, pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5),
    "pad11_const": lambda: one_node("Pad", X4, {"p": _i(0, 1, 1, 0, 0, 0, 2, -1),
                                                "v": np.array(1.5, np.float32)}, opset=11),
    "pad_reflect": lambda: one_node("Pad", X4, {"p": _i(0, 0, 2, 1, 0, 0, 1, 3)}, mode="reflect"),
    # wrap (opset 19, torch's circular padding); the last axis's 5 exceeds its size
    "pad_wrap": lambda: one_node("Pad", X4, {"p": _i(0, 0, 2, 1, 0, 0, 1, 5)}, opset=19,
                                 mode="wrap"),
    "pad_wrap_crop": lambda: one_node("Pad", X4, {"p": _i(0, 0, -1, 2, 0, 0, 1, -1)},
                                      opset=19, mode="wrap"),
    "pad_reflect_crop": lambda: one_node("Pad", X4, {"p": _i(0, 0, -1, 2, 0, 0, 2, -1)},
                                         mode="reflect"),
    "pad_edge": lambda: one_node("Pad", X4, {"p": _i(0, 0, 2, 1, 0, 0, 1, 3)}, mode="edge"),
    "pad18_axes": lambda: make_model(
        [helper.make_node("Pad", ["x", "p", "", "a"], ["y"])], X4, ["y"],
        {"p": _i(1, 2, 3, 0), "a": _i(2, 3)}, opset=18),
    "avgpool": lambda: one_node("AveragePool", X4, kernel_shape=[3, 3], strides=[2, 2]),
    "avgpool_pads": lambda: one_node("AveragePool", X4, kernel_shape=[3, 2],
                                     pads=[1, 0, 1, 1], strides=[2, 1]),
    "avgpool_include_pad": lambda: one_node("AveragePool", X4, kernel_shape=[3, 3],
                                            pads=[1, 1, 1, 1], count_include_pad=1),
    "avgpool_ceil": lambda: one_node("AveragePool", {"x": (1, 2, 7, 7)}, kernel_shape=[3, 3],
                                     strides=[2, 2], ceil_mode=1, pads=[1, 1, 0, 0]),
    "avgpool_1d": lambda: one_node("AveragePool", {"x": (1, 2, 9)}, kernel_shape=[2],
                                   strides=[2]),
    "maxpool": lambda: one_node("MaxPool", X4, kernel_shape=[2, 2], strides=[2, 2]),
    "maxpool_pads_dil_ceil": lambda: one_node("MaxPool", {"x": (1, 2, 8, 8)},
                                              kernel_shape=[2, 3], pads=[1, 0, 1, 2],
                                              dilations=[2, 1], strides=[2, 2], ceil_mode=1),
    "maxpool_same": lambda: one_node("MaxPool", X4, kernel_shape=[3, 3], strides=[2, 2],
                                     auto_pad="SAME_UPPER"),
    "global_avg": lambda: one_node("GlobalAveragePool", X4),
    "global_max": lambda: one_node("GlobalMaxPool", X4),
    "reducesum11": lambda: one_node("ReduceSum", X4, opset=11, axes=[1, -1], keepdims=0),
    "reducesum13": lambda: one_node("ReduceSum", X4, {"a": _i(2)}),
    "reducesum13_all": lambda: one_node("ReduceSum", X4, keepdims=0),
    "reducemean13": lambda: one_node("ReduceMean", X4, axes=[2, 3]),
    "reducemean18": lambda: one_node("ReduceMean", X4, {"a": _i(1)}, opset=18, keepdims=0),
    "reducemax13": lambda: one_node("ReduceMax", X4, axes=[1]),
    "reducemax18": lambda: one_node("ReduceMax", X4, {"a": _i(-1, 2)}, opset=18),
    "softmax11": lambda: one_node("Softmax", {"x": (1, 3, 4)}, opset=11, axis=1),
    "softmax13": lambda: one_node("Softmax", {"x": (1, 3, 4)}, axis=1),
    "softmax13_last": lambda: one_node("Softmax", X2),
    "resize_scales": lambda: make_model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")], X4, ["y"],
        {"s": np.array([1, 1, 2, 1.5], np.float32)}),
    "resize_sizes": lambda: make_model(
        [helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="nearest",
                          coordinate_transformation_mode="half_pixel",
                          nearest_mode="round_prefer_ceil")], X4, ["y"], {"s": _i(1, 3, 4, 9)}),
    "upsample9": lambda: one_node("Upsample", X4, {"s": np.array([1, 1, 2, 3], np.float32)},
                                  opset=9),
    # compositions (converters/composite.py) and rearrangements (converters/rearrange.py)
    "prelu_scalar": lambda: one_node("PRelu", X4, {"s": np.array([0.2], np.float32)}),
    "prelu_rank1": lambda: one_node("PRelu", {"x": (1, 3, 4)}, {"s": rand(4)}, opset=16),
    "hardsigmoid6": lambda: one_node("HardSigmoid", X2, opset=6),
    "logsoftmax11": lambda: one_node("LogSoftmax", {"x": (1, 3, 4)}, opset=11, axis=1),
    "logsoftmax13_axis1": lambda: one_node("LogSoftmax", {"x": (1, 3, 4)}, axis=1),
    "reducemin18_keep0": lambda: one_node("ReduceMin", X4, {"a": _i(-1, 1)}, opset=18,
                                          keepdims=0),
    "reducel2_all": lambda: one_node("ReduceL2", X4, keepdims=0),
    "reducelse18": lambda: one_node("ReduceLogSumExp", X4, {"a": _i(2, 3)}, opset=18),
    "layernorm_axis1_stats": lambda: make_model(
        [helper.make_node("LayerNormalization", ["x", "s"], ["y", "m", "r"], axis=1,
                          epsilon=1e-3),
         helper.make_node("Add", ["y", "m"], ["t"]), helper.make_node("Mul", ["t", "r"], ["z"])],
        {"x": (1, 3, 4)}, ["z"], {"s": rand(3, 4)}, opset=17),
    "instancenorm_1d": lambda: one_node("InstanceNormalization", {"x": (1, 3, 5)},
                                        {"s": rand(3), "b": rand(3, seed=4)}),
    "depth_to_space_dcr": lambda: one_node("DepthToSpace", {"x": (1, 8, 2, 3)}, blocksize=2),
    "cumsum_exclusive_last": lambda: one_node("CumSum", X4, {"a": _i(-1)}, opset=11,
                                              exclusive=1),
    "cumsum_reverse_exclusive": lambda: one_node("CumSum", X4, {"a": _i(1)}, opset=14,
                                                 exclusive=1, reverse=1),
    "gather_elements_axis0": lambda: one_node("GatherElements", {"x": (3, 4)},
                                              {"i": np.array([[2, 0, 1, 1], [0, -1, 2, 0]])}),
    "gather_nd_full": lambda: one_node("GatherND", X4, {"i": _i([[0, 1, 2, 3], [0, 0, 0, 0]])}),
    "trilu_upper": lambda: one_node("Trilu", X4, opset=14),
    "qdq_saturating_uint8": lambda: make_model(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        X2, ["y"], {"s": np.float32(0.004), "z": np.uint8(10)}),
    "qdq_int8_default_zero_13": lambda: make_model(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=-1),
         helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)],
        X2, ["y"], {"s": rand(5, low=0.005, high=0.02), "z": np.zeros(5, np.int8)}),
    "resize_linear_antialias": lambda: make_model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", antialias=1)], X4,
        ["y"], {"s": np.array([1, 1, 0.6, 0.5], np.float32)}, opset=18),
    "resize_cubic_exclude": lambda: make_model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic", exclude_outside=1,
                          cubic_coeff_a=-0.5)], X4, ["y"],
        {"s": np.array([1, 1, 1.7, 2], np.float32)}),
    "resize10_linear": lambda: make_model(
        [helper.make_node("Resize", ["x", "s"], ["y"], mode="linear")], X4, ["y"],
        {"s": np.array([1, 1, 2, 2], np.float32)}, opset=10),
    "upsample7_linear": lambda: one_node("Upsample", X4, opset=7, mode="linear",
                                         scales=[1.0, 1.0, 2.0, 3.0]),
    # constant int8 weights dequantised at opset 13: the ONNX reference evaluator has no
    # DequantizeLinear 13, the fold takes its newest version
    "dequantize_const_weights13": lambda: make_model(
        [helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], axis=0),
         helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], X2, ["y"],
        {"wq": np.arange(-10, 10, dtype=np.int8).reshape(4, 5), "s": rand(4, low=0.01, high=0.1),
         "z": np.array([0, 1, -2, 3], np.int8)}),
    "einsum_attention": lambda: make_model(
        [helper.make_node("Einsum", ["x", "x"], ["y"], equation="bhqd,bhkd->bhqk")],
        {"x": (1, 2, 3, 4)}, ["y"], opset=12),
    "einsum_ellipsis_const_left": lambda: make_model(
        [helper.make_node("Einsum", ["w", "x"], ["y"], equation="kj,...ij->...ki")],
        {"x": (1, 2, 3, 4)}, ["y"], {"w": rand(5, 4)}, opset=12),
    "einsum_implicit_transpose": lambda: one_node("Einsum", {"x": (1, 3, 4)}, opset=12,
                                                  equation="jib"),
    # every entry clamped to an input-dependent lower end: onnxruntime's ArgMax sees a tie
    # and takes the first index; the IR must clamp to exactly the same value
    "clip_dynamic_ties_argmax": lambda: make_model(
        [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
         helper.make_node("Add", ["m", "one"], ["lo"]),
         helper.make_node("Clip", ["x", "lo", "hi"], ["c"]),
         helper.make_node("ArgMax", ["c"], ["a"], axis=1),
         helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)],
        X2, ["y"], {"one": np.float32(1.0), "hi": np.float32(5.0)}),
    "round_ties": lambda: make_model(
        [helper.make_node("Mul", ["x", "k"], ["t"]), helper.make_node("Round", ["t"], ["y"])],
        X2, ["y"], {"k": np.float32(4.0)}),
    "identity_dropout": lambda: make_model(
        [helper.make_node("Identity", ["x"], ["t"]), helper.make_node("Dropout", ["t"], ["y"])],
        X2, ["y"]),
}

UNARY = ["Relu", "Abs", "Sign", "Floor", "Sigmoid", "Tanh", "Atan", "Erf", "Sin", "Cos", "Exp"]
POSITIVE = ["Log", "Reciprocal", "Sqrt"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_converter_matches_onnxruntime(name):
    compare(CASES[name]())


def test_gemm_alpha_is_a_scaling_of_its_own():
    """alpha is not folded into float32 weights (that rounds every weight, a change the dot
    product's allowance does not cover): the weights stay as given and a Mul scales."""
    w = rand(5, 3)
    proto = one_node("Gemm", X2, {"w": w, "b": rand(1, 3)}, alpha=0.1, beta=2.0)
    data = proto.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data, simplify=False).graph
    linear = next(n for n in graph.nodes if n.op == "Linear")
    np.testing.assert_array_equal(np.asarray(linear.consts[1]), w.T)
    assert [n.op for n in graph.nodes if n.op in ("Mul", "Add")] == ["Mul", "Add"]


@pytest.mark.parametrize("op", UNARY)
def test_unary(op):
    compare(one_node(op, {"x": (1, 3, 5)}), n=6, low=-3.0, high=3.0)


@pytest.mark.parametrize("op", POSITIVE)
def test_unary_positive_domain(op):
    compare(one_node(op, {"x": (1, 7)}), low=0.1, high=4.0)


@pytest.mark.parametrize("opset,attrs,inits", [
    (6, {"min": -0.5, "max": 1.0}, None),
    (13, {}, {"lo": np.array(-0.25, np.float32), "hi": np.array(0.75, np.float32)}),
    (13, {}, {"lo": np.array(0.0, np.float32)}),
])
def test_clip(opset, attrs, inits):
    compare(one_node("Clip", X2, inits, opset=opset, **attrs))


def test_leaky_relu_and_gelu():
    compare(one_node("LeakyRelu", X2, alpha=0.2))
    compare(one_node("Gelu", X2, opset=20))
    compare(one_node("Gelu", X2, opset=20, approximate="tanh"))


def test_pow_other_exponent():
    compare(one_node("Pow", X2, {"e": np.array([3.0], np.float32)}))


def test_constant_subgraph_folds():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, Constant, ConstantOfShape and Cast
    all fold to constants; only the Reshape and Add of the input remain."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value_int=0),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value_ints=[-1]),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("ConstantOfShape", ["k"], ["ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Cast", ["ones"], ["onesd"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["r", "onesd"], ["y"]),
    ]
    model = make_model(nodes, X4, ["y"], {"ax": _i(0), "k": _i(1, 108)}, batch_symbolic=True)
    data = model.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data, simplify=False).graph
    assert [n.op for n in graph.nodes] == ["Reshape", "Add"]  # folded by the importer itself
    reshape, add = graph.nodes
    assert reshape.inputs == ("x",) and reshape.shape == (1, 108)
    assert add.inputs == (reshape.name, None) and set(add.consts) == {1}
    assert np.array_equal(add.consts[1], np.ones((1, 108), np.float32))
    compare(model)


def test_nhwc_symbolic_batch():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["y"])]
    model = make_model(nodes, {"x": (1, 6, 6, 3)}, ["y"], {"w": rand(2, 3, 3, 3)},
                       batch_symbolic=True)
    compare(model)


# ---------------------------------------------------------------- ops on input-dependent values
def _cast_back(nodes, inputs=X2, inits=None, opset=13):
    """``nodes`` end in value "b" (bool or int); the model casts it to float as "y"."""
    last = helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT)
    return make_model([*nodes, last], inputs, ["y"], inits, opset)


def _scaled_cast(to, scale=200.0):
    """Cast(x * scale) to an integer type: out-of-range values for the narrow types."""
    return _cast_back([helper.make_node("Mul", ["x", "k"], ["t"]),
                       helper.make_node("Cast", ["t"], ["b"], to=to)],
                      inits={"k": np.float32(scale)})


def _ties(op, **attrs):
    """Floor(2 x) has ties, so the first/last index rule matters."""
    return _cast_back([helper.make_node("Mul", ["x", "two"], ["t"]),
                       helper.make_node("Floor", ["t"], ["f"]),
                       helper.make_node(op, ["f"], ["b"], **attrs)],
                      {"x": (1, 3, 5)}, {"two": np.float32(2.0)})


DYNAMIC_CASES = {
    "less_swaps": lambda: _cast_back([helper.make_node("Less", ["x", "z"], ["b"])],
                                     {"x": (1, 5), "z": (1, 5)}),
    "less_or_equal_const": lambda: _cast_back(
        [helper.make_node("Floor", ["x"], ["f"]),
         helper.make_node("LessOrEqual", ["f", "c"], ["b"])],
        inits={"c": np.array([0, 1, -1, 0, 1], np.float32)}),
    "xor": lambda: _cast_back([helper.make_node("Greater", ["x", "z"], ["p"]),
                               helper.make_node("Greater", ["z", "x"], ["q"]),
                               helper.make_node("Xor", ["p", "q"], ["b"])],
                              {"x": (1, 5), "z": (1, 5)}),
    "where_dynamic_const_branch": lambda: make_model(
        [helper.make_node("Greater", ["x", "z"], ["p"]),
         helper.make_node("Where", ["p", "c", "x"], ["y"])],
        {"x": (1, 5), "z": (5,)}, ["y"], {"c": rand(1, 5)}),
    "cast_int8_wraps": lambda: _scaled_cast(TensorProto.INT8),
    "cast_uint8_wraps": lambda: _scaled_cast(TensorProto.UINT8),
    "cast_int32_truncates": lambda: _scaled_cast(TensorProto.INT32, 7.3),
    "cast_int64": lambda: _scaled_cast(TensorProto.INT64, 1e4),
    "cast_bool": lambda: _cast_back([helper.make_node("Floor", ["x"], ["f"]),
                                     helper.make_node("Cast", ["f"], ["b"],
                                                      to=TensorProto.BOOL)]),
    "cast_float16": lambda: make_model(
        [helper.make_node("Mul", ["x", "k"], ["t"]),
         helper.make_node("Cast", ["t"], ["h"], to=TensorProto.FLOAT16),
         helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], X2, ["y"],
        {"k": np.float32(1234.567)}),
    "argmax_ties_first": lambda: _ties("ArgMax", axis=2, keepdims=0),
    "argmax_ties_last": lambda: _ties("ArgMax", axis=1, select_last_index=1),
    "argmin_ties_last_neg_axis": lambda: _ties("ArgMin", axis=-1, select_last_index=1),
    "onehot_negative_and_out_of_range": lambda: make_model(
        [helper.make_node("Mul", ["x", "k"], ["t"]),
         helper.make_node("Cast", ["t"], ["f"], to=TensorProto.INT64),
         helper.make_node("OneHot", ["f", "d", "v"], ["y"], axis=0)],
        X2, ["y"], {"k": np.float32(2.5), "d": _i(3), "v": np.array([-1.0, 2.0], np.float32)}),
    "pow_dynamic_base_and_exponent": lambda: make_model(
        [helper.make_node("Exp", ["x"], ["b"]), helper.make_node("Pow", ["b", "z"], ["y"])],
        {"x": (1, 5), "z": (1, 5)}, ["y"]),
    "pow_constant_base_array": lambda: make_model(
        [helper.make_node("Pow", ["c", "x"], ["y"])], X2, ["y"],
        {"c": np.array([0.5, 1.0, 2.0, 3.0, 10.0], np.float32)}),
    "max_const_first_broadcast": lambda: make_model(
        [helper.make_node("Max", ["c", "d", "x", "z"], ["y"])], {"x": (1, 3, 4), "z": (4,)},
        ["y"], {"c": rand(3, 1), "d": rand(1)}),
    "min_two_dynamic": lambda: one_node("Min", {"x": (1, 5), "z": (1, 5)}),
    "min_one_input": lambda: one_node("Min", X2),
    "sum_three": lambda: one_node("Sum", {"x": (1, 5), "z": (1, 1)}, {"c": rand(5)}),
    "mean_three": lambda: one_node("Mean", {"x": (1, 5), "z": (1, 1)}, {"c": rand(5)}),
    "scatternd_const_patch": lambda: one_node(
        "ScatterND", X4, {"i": _i([0, 1, 2, 3], [0, 2, 5, 5], [0, 0, 0, 1]),
                          "u": rand(3)}),
    "scatternd_dynamic_rows": lambda: make_model(
        [helper.make_node("Neg", ["z"], ["u"]),
         helper.make_node("ScatterND", ["c", "i", "u"], ["y"])],
        {"z": (1, 2, 3)}, ["y"], {"c": rand(1, 4, 3), "i": _i([[0, 2], [0, 0]])}),
    "scatternd_whole_tensor": lambda: make_model(
        [helper.make_node("ScatterND", ["x", "i", "z"], ["y"])], {"x": (1, 2), "z": (1, 2)},
        ["y"], {"i": _i([0])}),
    "pow_exponent_array_equal_values": lambda: one_node(
        "Pow", X2, {"e": np.array([2.0, 2.0, 2.0, 2.0, 2.0], np.float32)}),
}


@pytest.mark.parametrize("name", sorted(DYNAMIC_CASES))
def test_dynamic_value_converter_matches_onnxruntime(name):
    compare(DYNAMIC_CASES[name](), n=16)


@pytest.mark.parametrize("build,match", [
    (lambda: make_model([helper.make_node("Pow", ["c", "x"], ["y"])], X2, ["y"],
                        {"c": np.float32(-2.0)}), "base that is not positive"),
    (lambda: _cast_back([helper.make_node("Cast", ["x"], ["b"], to=TensorProto.STRING)]),
     "cast of an input-dependent value to STRING"),
    (lambda: one_node("Pow", X2, {"e": np.array([1, 2, 3, 2, 1], np.float32)}),
     "different values"),
    (lambda: one_node("ScatterND", X2, {"i": _i([0, 1]), "u": rand(1)}, opset=16,
                      reduction="add"), "reduction 'add'"),
    (lambda: make_model([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
                         helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
                        {"x": (1, 2)}, ["y"], {"u": rand(1)}),
     "'ScatterND'.*indices of ScatterND .*depends on the input"),
    (lambda: make_model([helper.make_node("Resize", ["x", "r", "s"], ["y"], mode="linear",
                                          coordinate_transformation_mode="tf_crop_and_resize")],
                        X4, ["y"], {"r": np.array([0, 0, 0, 0, 1, 1, 0.5, 0.5], np.float32),
                                    "s": np.array([1, 1, 2, 2], np.float32)}),
     "'Resize'.*tf_crop_and_resize"),
    (lambda: make_model([helper.make_node("Neg", ["x"], ["n"]),
                         helper.make_node("PRelu", ["x", "n"], ["y"])], X2, ["y"]),
     "'PRelu'.*input-dependent slope"),
    (lambda: one_node("ReduceL1", X4, {"a": np.array([], np.int64)}, opset=18,
                      noop_with_empty_axes=1), "'ReduceL1'.*noop_with_empty_axes"),
])
def test_unsupported_uses_name_op_and_reason(build, match):
    from verifier.errors import UnsupportedOpError
    from verifier.onnx_import.loader import import_proto

    model = build()
    data = model.SerializeToString()
    with pytest.raises(UnsupportedOpError, match=match):
        import_proto(model, data)


@pytest.mark.parametrize("kwargs", [dict(), dict(pick_then=False), dict(nested=True),
                                    dict(nested=True, pick_then=False), dict(branch_init=True)])
def test_if_on_a_constant_condition_inlines_its_branch(kwargs):
    from tests.onnx_import.op_models import if_on_shape

    model = if_on_shape(**kwargs)
    compare(model, n=8)
    data = model.SerializeToString()
    imported = import_proto(model, data)
    branch_names = {"t_out", "t_mul", "tt_out", "te_out", "e_out", "t_scale"}
    assert not branch_names & set(imported.value_names), "branch values are not outer values"


def test_if_on_an_input_dependent_condition_is_refused():
    branch = lambda op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["x"], ["o_" + op])], op, [],
        [helper.make_tensor_value_info("o_" + op, TensorProto.FLOAT, None)])
    model = make_model([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                        helper.make_node("Greater", ["s", "z"], ["c"]),
                        helper.make_node("If", ["c"], ["y"], name="gate",
                                         then_branch=branch("Relu"), else_branch=branch("Neg"))],
                       X2, ["y"], {"z": np.float32(0.0)})
    with pytest.raises(UnsupportedOpError, match="'If'.*gate.*condition of If node"):
        import_proto(model, model.SerializeToString())


@pytest.mark.parametrize("shape,attrs,opset", [
    ((1, 3, 5), dict(axes=[2]), 13),                    # odd length: a carried element
    ((1, 2, 3, 4), dict(axes=[1, 3], keepdims=0), 13),  # axes moved last first
    ((1, 7), dict(), 13),                               # every axis
    ((1, 2, 6), {"a": np.array([-1], np.int64)}, 18),   # axes as an input
])
def test_reduce_prod(shape, attrs, opset):
    inits = {k: v for k, v in attrs.items() if isinstance(v, np.ndarray)}
    kw = {k: v for k, v in attrs.items() if k not in inits}
    compare(one_node("ReduceProd", {"x": shape}, inits or None, opset=opset, **kw), n=8,
            low=-1.5, high=1.5)


def _top_k(shape, k, opset=11, read_indices=False, **attrs):
    outs = ["y", "i"]
    nodes = [helper.make_node("TopK", ["x", "k"], outs, name="top", **attrs)]
    if read_indices:
        nodes += [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
                  helper.make_node("Add", ["y", "fi"], ["z"])]
    return make_model(nodes, {"x": shape}, ["z" if read_indices else "y"],
                      {"k": np.array([k], np.int64)}, opset)


@pytest.mark.parametrize("shape,k,opset,attrs", [
    ((1, 7), 7, 11, {}),                           # torch.sort: every element, descending
    ((1, 9), 3, 11, {"largest": 0}),               # the 3 smallest, ascending
    ((1, 5, 4), 2, 10, {"axis": 1}),               # opset 10 (largest only), a middle axis
    ((2, 6), 1, 11, {"sorted": 0}),                # k = 1: the order is no choice
    ((1, 1), 1, 11, {}),                           # one element: no comparator
])
def test_top_k_values(shape, k, opset, attrs):
    compare(_top_k(shape, k, opset, **attrs), n=8)
    compare(_top_k(shape, k, opset, **attrs), n=4, low=-0.01, high=0.01)  # near ties


def test_top_k_indices_are_refused_only_when_read():
    with pytest.raises(UnsupportedOpError, match="'TopK'.*top.*indices output is read"):
        import_proto(_top_k((1, 5), 2, read_indices=True),
                     _top_k((1, 5), 2, read_indices=True).SerializeToString())
    with pytest.raises(UnsupportedOpError, match="sorted=0 with k > 1"):
        model = _top_k((1, 5), 2, sorted=0)
        import_proto(model, model.SerializeToString())


def test_if_branch_that_redefines_an_outer_value_is_refused():
    """Inlining relies on names being unique model-wide: a branch that writes an outer name
    would replace that value for every later reader."""
    from tests.onnx_import.op_models import if_on_shape
    from verifier.errors import ModelError

    model = if_on_shape()
    then_branch = next(a.g for a in model.graph.node[3].attribute if a.name == "then_branch")
    then_branch.node[0].output[0] = "s"  # the outer Shape's output
    then_branch.output[0].name = "s"
    with pytest.raises(ModelError, match="redefines the outer value 's'"):
        import_proto(model, model.SerializeToString())


@pytest.mark.parametrize("divisor", [np.float32(0.7), np.float32(-1.3),
                                     np.array([0.5, -2.0, 3.0, 0.25], np.float32)])
@pytest.mark.parametrize(("fmod", "opset"), [(1, 13), (0, 28), (1, 28)])
def test_mod_matches_onnxruntime(divisor, fmod, opset):
    """fmod = 1: the sign of x (C's fmod); fmod = 0 (floats from opset 28): the sign of d."""
    model = make_model([helper.make_node("Mod", ["x", "d"], ["y"], fmod=fmod)], {"x": (2, 4)},
                       ["y"], {"d": divisor}, opset=opset)
    compare(model, n=64, low=-5.0, high=5.0)


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_of_integers_matches_onnxruntime(fmod):
    nodes = [helper.make_node("Mul", ["x", "k"], ["xk"]),
             helper.make_node("Cast", ["xk"], ["xi"], to=TensorProto.INT32),
             helper.make_node("Mod", ["xi", "d"], ["r"], fmod=fmod),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    model = make_model(nodes, {"x": (2, 4)}, ["y"],
                       {"k": np.float32(10.0), "d": np.array([2, -3, 5, 7], np.int32)})
    compare(model, n=64, low=-5.0, high=5.0)


@pytest.mark.parametrize(("inits", "match"), [
    ({"d": np.array([1.0, 0.0, 2.0, 3.0], np.float32)}, "zero or non-finite divisor"),
    ({}, "input-dependent divisor")])
def test_mod_refuses_what_it_cannot_bound(inits, match):
    inputs = {"x": (2, 4)} if inits else {"x": (2, 4), "d": (2, 4)}
    model = make_model([helper.make_node("Mod", ["x", "d"], ["y"], fmod=1)], inputs, ["y"],
                       inits)
    data = model.SerializeToString()
    with pytest.raises(UnsupportedOpError, match=match):
        import_proto(onnx.load_model_from_string(data), data)


def test_a_pool_over_four_spatial_axes_is_refused_by_name():
    """(jax2onnx writes a window max over NHWC so; onnxruntime cannot run it either)"""
    model = one_node("MaxPool", {"x": (1, 1, 1, 4, 4, 2)}, kernel_shape=[1, 2, 2, 1],
                     strides=[1, 2, 2, 1])
    with pytest.raises(UnsupportedOpError, match="'MaxPool'.*4 spatial axes"):
        import_proto(model, model.SerializeToString())


def test_a_model_onnxruntime_cannot_run_is_a_model_error():
    """The differential check runs the model in onnxruntime first; a model it cannot run is
    bad input (exit 2), not an internal error."""
    import dataclasses

    from verifier.errors import ModelError
    from verifier.onnx_import.check import differential_check
    from verifier.spec.types import InputRegion, OutputCondition, Spec

    # Gather at an index past the end: the importer folds nothing, onnxruntime fails at run
    model = make_model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], X2, ["y"],
                       {"i": np.array([0], np.int64)})
    imported = import_proto(model, model.SerializeToString())
    bad = onnx.load_model_from_string(model.SerializeToString())
    bad.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.array([7], np.int64),
                                                                    "i"))
    imported = dataclasses.replace(imported, onnx_bytes=bad.SerializeToString())
    region = InputRegion(np.zeros(5), np.ones(5),
                         OutputCondition(np.ones((1, 1, 1)), np.zeros((1, 1))))
    with pytest.raises(ModelError, match="onnxruntime cannot run the model"):
        differential_check(imported, Spec((region,), 5, 1))


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    # jax2onnx's window sum over NCHW: two leading unit axes
    ((1, 1, 1, 4, 6, 6), (1, 1, 1, 1, 2, 2), dict(strides=[1, 1, 2, 2])),
    # unit axes around the kernel's, groups, bias, padding on the kept axes
    ((1, 2, 3, 5, 4, 2), (4, 1, 1, 3, 3, 1), dict(group=2, pads=[0, 1, 1, 0, 0, 1, 0, 0])),
    # a unit kernel on every axis (one axis is kept)
    ((1, 2, 2, 3, 2, 2), (3, 2, 1, 1, 1, 1), dict()),
])
def test_a_conv_over_four_spatial_axes_with_unit_axes_agrees_with_onnxruntime(x_shape, w_shape,
                                                                             attrs):
    inits = {"w": rand(*w_shape)}
    if attrs.get("group"):
        inits["b"] = rand(w_shape[0], seed=2)
    compare(one_node("Conv", {"x": x_shape}, inits, **attrs), n=4)


def test_a_conv_kernel_over_four_spatial_axes_is_refused_by_name():
    model = one_node("Conv", {"x": (1, 1, 3, 3, 3, 3)}, {"w": rand(1, 1, 2, 2, 2, 2)})
    with pytest.raises(UnsupportedOpError, match="'Conv'.*4 spatial axes"):
        import_proto(model, model.SerializeToString())


def test_col2im_with_blocks_that_do_not_tile_the_image_is_refused_by_name():
    from verifier.errors import ModelError

    model = one_node("Col2Im", {"x": (1, 12, 8)}, {"i": np.array([5, 6], np.int64),
                                                   "b": np.array([2, 3], np.int64)},
                     opset=18, strides=[1, 2], dilations=[2, 1], pads=[1, 0, 0, 1])
    with pytest.raises(ModelError, match=r"Col2Im node .*8 blocks, but the image \[5, 6\] "
                                         r"holds \[4, 3\]"):
        import_proto(model, model.SerializeToString())
