"""Blocks of the unusual-model generator in the forms other exporters write: control flow
(Loop as tf2onnx writes a Keras SimpleRNN and TorchScript a list built in a loop, Scan as
older converters write RNNs), ONNX sequences, ReverseSequence, and Keras' LayerNormalization
as a BatchNormalization fed its input's own statistics (verifier/onnx_import/converters/:
control_flow.py, sequence.py, rearrange.py, conv.py). Merged into ``unusual_blocks``'
tables; vector blocks on [1, n].
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from fuzzing.unusual_blocks import F32, I64, _weights


def _steps(n: int) -> int:
    return next((s for s in (4, 3, 2) if n % s == 0 and n > s), n)


def _feature(b, op: str) -> None:
    if op not in b.ops:
        b.ops.append(op)


def _cell_body(b, feat: int, hid: int, names: dict, read_step: list, cond: list,
               extra_inputs: list, extra_outputs: list, extra_nodes: list):
    """A recurrent cell h' = act(x_t W + h U + c) as a subgraph: ``read_step`` nodes give
    ``names['xt']``; ``cond`` nodes give ``names['cond_out']`` (may be empty when the body has
    no condition output); W is an outer constant, U and c the body's own initializers."""
    act = str(b.rng.choice(["Tanh", "Relu", "Sigmoid"]))
    w = b.const(_weights(b, (feat, hid)).astype(F32))
    u_name, c_name = b.fresh("u_"), b.fresh("cb_")
    nodes = [*read_step,
             helper.make_node("MatMul", [names["xt"], w], [names["xw"]]),
             helper.make_node("MatMul", [names["h_in"], u_name], [names["hu"]]),
             helper.make_node("Add", [names["xw"], names["hu"]], [names["pre"]]),
             helper.make_node("Add", [names["pre"], c_name], [names["pre_c"]]),
             helper.make_node(act, [names["pre_c"]], [names["h_out"]]),
             *cond, *extra_nodes]
    inits = [numpy_helper.from_array(_weights(b, (hid, hid)).astype(F32), u_name),
             numpy_helper.from_array((b.rng.normal(size=(1, hid)) * 0.3).astype(F32), c_name)]
    _feature(b, act)
    return nodes, inits


def loop_cell(b) -> None:
    """z read as S steps by a recurrent cell in a Loop: tf2onnx's while loop (no trip count,
    the condition i + 1 < S computed in the body) or a counted loop; the block's output is the
    last state, every step's state as a scan output, or a list grown by SequenceInsert and
    joined by ConcatFromSequence (TorchScript's form)."""
    n = b.shape[1]
    steps = _steps(n)
    feat, hid = n // steps, int(b.rng.integers(2, 5))
    style = str(b.rng.choice(["while", "count"]))
    collect = str(b.rng.choice(["last", "scan", "list"]))
    seq = b.node("Reshape", [b.cur, b.const([steps, 1, feat], I64)], False)
    names = {k: b.fresh(f"lp_{k}_") for k in ("i", "cond_in", "h_in", "xt", "xw", "hu", "pre",
                                              "pre_c", "h_out", "cond_out", "next", "list_in",
                                              "list_out", "h_scan")}
    read = [helper.make_node("Gather", [seq, names["i"]], [names["xt"]], axis=0)]
    if style == "while":
        limit, one = b.const(np.int64(steps), I64), b.const(np.int64(1), I64)
        cond = [helper.make_node("Add", [names["i"], one], [names["next"]]),
                helper.make_node("Less", [names["next"], limit], [names["cond_out"]])]
    else:
        cond = [helper.make_node("Identity", [names["cond_in"]], [names["cond_out"]])]
    extra_in, extra_out, extra_nodes = [], [], []
    if collect == "list":
        extra_in = [helper.make_tensor_sequence_value_info(names["list_in"], TensorProto.FLOAT,
                                                           None)]
        extra_out = [helper.make_tensor_sequence_value_info(names["list_out"],
                                                            TensorProto.FLOAT, None)]
        extra_nodes = [helper.make_node("SequenceInsert", [names["list_in"], names["h_out"]],
                                        [names["list_out"]])]
    elif collect == "scan":
        extra_out = [helper.make_tensor_value_info(names["h_scan"], TensorProto.FLOAT, None)]
        extra_nodes = [helper.make_node("Identity", [names["h_out"]], [names["h_scan"]])]
    nodes, inits = _cell_body(b, feat, hid, names, read, cond, extra_in, extra_out, extra_nodes)
    body = helper.make_graph(
        nodes, b.fresh("loop_body_"),
        [helper.make_tensor_value_info(names["i"], TensorProto.INT64, []),
         helper.make_tensor_value_info(names["cond_in"], TensorProto.BOOL, []),
         helper.make_tensor_value_info(names["h_in"], TensorProto.FLOAT, [1, hid]), *extra_in],
        [helper.make_tensor_value_info(names["cond_out"], TensorProto.BOOL, []),
         helper.make_tensor_value_info(names["h_out"], TensorProto.FLOAT, [1, hid]),
         *extra_out], inits)
    h0 = b.const((b.rng.normal(size=(1, hid)) * 0.3).astype(F32))
    carried = [h0]
    if collect == "list":
        carried.append(b.node("SequenceEmpty", [], dtype=TensorProto.FLOAT))
    trips = "" if style == "while" else b.const(np.int64(steps), I64)
    cond0 = b.const(np.bool_(True), np.bool_) if style == "while" else ""
    outs = [b.fresh("loop_h_")]
    if collect != "last":
        outs.append(b.fresh("loop_o_"))
    b.nodes.append(helper.make_node("Loop", [trips, cond0, *carried], outs,
                                    name=b.fresh("loop_"), body=body))
    _feature(b, "Loop")
    if collect == "last":
        b.set(outs[0], (1, hid))
        return
    joined = outs[1]
    if collect == "list":
        joined = b.node("ConcatFromSequence", [outs[1]], axis=1)
    b.set(b.node("Reshape", [joined, b.const([1, steps * hid], I64)], False), (1, steps * hid))


def scan_cell(b) -> None:
    """z read as S steps by a recurrent cell in a Scan (input direction and output axis and
    direction drawn); the block's output is the last state or every step's, flattened."""
    n = b.shape[1]
    steps = _steps(n)
    feat, hid = n // steps, int(b.rng.integers(2, 5))
    seq = b.node("Reshape", [b.cur, b.const([1, steps, feat], I64)], False)
    names = {k: b.fresh(f"sc_{k}_") for k in ("h_in", "xt", "xw", "hu", "pre", "pre_c",
                                              "h_out", "h_scan")}
    nodes, inits = _cell_body(
        b, feat, hid, names, [], [], [], [],
        [helper.make_node("Identity", [names["h_out"]], [names["h_scan"]])])
    body = helper.make_graph(
        nodes, b.fresh("scan_body_"),
        [helper.make_tensor_value_info(names["h_in"], TensorProto.FLOAT, [1, hid]),
         helper.make_tensor_value_info(names["xt"], TensorProto.FLOAT, [1, feat])],
        [helper.make_tensor_value_info(names["h_out"], TensorProto.FLOAT, [1, hid]),
         helper.make_tensor_value_info(names["h_scan"], TensorProto.FLOAT, None)], inits)
    h0 = b.const((b.rng.normal(size=(1, hid)) * 0.3).astype(F32))
    last, every = b.fresh("scan_h_"), b.fresh("scan_o_")
    out_axis = int(b.rng.integers(0, 2))
    b.nodes.append(helper.make_node(
        "Scan", [h0, seq], [last, every], name=b.fresh("scan_"), body=body, num_scan_inputs=1,
        scan_input_axes=[1], scan_input_directions=[int(b.rng.integers(0, 2))],
        scan_output_axes=[out_axis], scan_output_directions=[int(b.rng.integers(0, 2))]))
    _feature(b, "Scan")
    if b.rng.random() < 0.4:
        b.set(last, (1, hid))
        return
    b.set(b.node("Reshape", [every, b.const([1, steps * hid], I64)], False), (1, steps * hid))


def stat_batchnorm(b) -> None:
    """Keras' LayerNormalization as tf2onnx writes it: z (shifted by up to 4, so the
    runtime's fused products partly cancel) reshaped to [1, g, n / g, 1], its mean and
    variance per group (ReduceMean, ReduceSumSquare of the centred values over the count) fed
    to a BatchNormalization, reshaped back."""
    n = b.shape[1]
    groups = next((g for g in (3, 2) if n % g == 0 and n // g >= 2), 1)
    size = n // groups
    shifted = b.node("Add", [b.cur, b.const(np.float32(b.rng.uniform(-4, 4)))], False)
    xr = b.node("Reshape", [shifted, b.const([1, groups, size, 1], I64)], False)
    m4 = b.node("ReduceMean", [xr], False, axes=[0, 2, 3], keepdims=1)
    mean = b.node("Squeeze", [m4, b.const([0, 2, 3], I64)], False)
    centred = b.node("Sub", [xr, m4], False)
    ss = b.node("ReduceSumSquare", [centred], False, axes=[0, 2, 3], keepdims=0)
    var = b.node("Div", [ss, b.const(np.float32(size))], False)
    scale = b.const(b.rng.uniform(0.5, 1.5, groups).astype(F32))
    bias = b.const((b.rng.normal(size=groups) * 0.3).astype(F32))
    eps = float(b.rng.choice([1e-3, 1e-5]))
    normed = b.node("BatchNormalization", [xr, scale, bias, mean, var], epsilon=eps)
    b.set(b.node("Reshape", [normed, b.const([1, n], I64)], False), (1, n))


def reverse_sequence(b) -> None:
    """z as S steps (time axis 0 or 1 of a batch of one), the first L reversed."""
    n = b.shape[1]
    steps = _steps(n)
    feat = n // steps
    time_first = b.rng.random() < 0.5
    shape = [steps, 1, feat] if time_first else [1, steps, feat]
    seq = b.node("Reshape", [b.cur, b.const(shape, I64)], False)
    lens = b.const([int(b.rng.integers(0, steps + 1))], I64)
    axes = {"time_axis": 0, "batch_axis": 1} if time_first else {"time_axis": 1,
                                                                   "batch_axis": 0}
    rev = b.node("ReverseSequence", [seq, lens], **axes)
    b.set(b.node("Reshape", [rev, b.const([1, n], I64)], False), (1, n))


VECTOR_FLOW = {
    "loop_cell": (loop_cell, lambda s: s[1] >= 2),
    "scan_cell": (scan_cell, lambda s: s[1] >= 2),
    "stat_batchnorm": (stat_batchnorm, lambda s: s[1] >= 2),
    "reverse_sequence": (reverse_sequence, lambda s: s[1] >= 2),
}
