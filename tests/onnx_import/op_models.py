"""One small model per ONNX op that ``nncert supports --onnx-operators`` lists, with the op's
operands depending on the input; bool/int results are cast back to float for the comparison.

``OP_MODELS[op]`` is ``(build, low, high)``: a model builder and the input range to sample.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_import.onnx_util import make_model, one_node, rand

X = {"x": (1, 4)}
IMG = {"x": (1, 2, 4, 4)}
F = TensorProto.FLOAT


def _i(*v):
    return np.array(v, dtype=np.int64)


def _n(op, ins, out, **attrs):
    return helper.make_node(op, ins, [out], **attrs)


def _to_float(nodes, inputs=X, inits=None, opset=13, out="b"):
    """``nodes`` end in value ``out`` (bool/int); the model casts it to float as ``y``."""
    return make_model([*nodes, _n("Cast", [out], "y", to=F)], inputs, ["y"], inits, opset)


def _cmp(op):
    """op(int(3 x), c): integer-valued operands, so Equal is sometimes true."""
    return lambda: _to_float([_n("Mul", ["x", "three"], "t"), _n("Cast", ["t"], "i", to=F),
                              _n("Floor", ["i"], "f"), _n(op, ["f", "c"], "b")],
                             inits={"three": np.float32(3.0),
                                    "c": np.array([0, 1, -1, 2], np.float32)})


def _logic(op):
    return lambda: _to_float([_n("Greater", ["x", "z"], "p"), _n("Less", ["x", "h"], "q"),
                              _n(op, ["p", "q"], "b")],
                             inits={"z": np.float32(0.0), "h": np.float32(0.5)})


def _shape_mul(op):
    """x * float(op(x)[...]): a shape value computed from the input tensor."""
    nodes = [_n(op, ["x"], "s"), _n("Cast", ["s"], "sf", to=F), _n("ReduceSum", ["sf"], "k",
                                                                     keepdims=0),
             _n("Mul", ["x", "k"], "y")]
    return lambda: make_model(nodes, X, ["y"])


def _qdq(zero_point, axis=None):
    """x quantised with scale(s) 0.02 (per tensor) or [0.02, 0.03] (per channel of a
    [1, 2, 4, 4] input), then dequantised."""
    per_axis = axis is not None
    scale = np.array([0.02, 0.03], np.float32) if per_axis else np.float32(0.02)
    attrs = {"axis": axis} if per_axis else {}
    nodes = [_n("QuantizeLinear", ["x", "s", "z"], "q", **attrs),
             _n("DequantizeLinear", ["q", "s", "z"], "y", **attrs)]
    return make_model(nodes, IMG if per_axis else X, ["y"], {"s": scale, "z": zero_point})


def _unary(op, **attrs):
    return lambda: one_node(op, X, **attrs)


def _binary(op):
    return lambda: one_node(op, X, {"c": rand(4, low=0.5, high=1.5)})


def _variadic(op):
    """op(x, -x, c): two dynamic operands and a broadcast constant."""
    return lambda: make_model([_n("Neg", ["x"], "m"), _n(op, ["x", "m", "c"], "y")], X, ["y"],
                              {"c": rand(1, low=-0.5, high=0.5)})


def _grid_sample_of_input(mode: str, padding: str, align: int, opset: int):
    """An image [1, 2, 4, 4] read at the grid 1.3 x reshaped to [1, 4, 4, 2]."""
    nodes = [_n("Mul", ["x", "k"], "t"), _n("Reshape", ["t", "s"], "g"),
             _n("GridSample", ["x", "g"], "y", mode=mode, padding_mode=padding,
                align_corners=align)]
    return make_model(nodes, IMG, ["y"], {"k": np.float32(1.3), "s": _i(1, 4, 4, 2)}, opset)


RECURRENT_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
SEQ, BATCH, IN, HID = 4, 1, 3, 5


def recurrent_model(op: str, directions: int = 1, layout: int = 0, bias: bool = True,
                    h0: str = "", c0: str = "", peepholes: bool = False, lens=None,
                    outputs=(0, 1, 2), seed: int = 0, batch: int = BATCH, **attrs):
    """One ``op`` node on input x; h0 / c0: "" absent, "const" an initializer, "input" a
    second (third) model input. ``outputs``: which of Y, Y_h, Y_c the model returns."""
    rng = np.random.default_rng(seed)
    g = RECURRENT_GATES[op]
    x_shape = (batch, SEQ, IN) if layout else (SEQ, batch, IN)
    state = (batch, directions, HID) if layout else (directions, batch, HID)
    inputs, inits = {"x": x_shape}, {
        "W": rng.uniform(-0.8, 0.8, (directions, g * HID, IN)).astype(np.float32),
        "R": rng.uniform(-0.8, 0.8, (directions, g * HID, HID)).astype(np.float32)}
    names = ["x", "W", "R"]
    optional = [("B", bias, lambda: rng.uniform(-0.5, 0.5, (directions, 2 * g * HID))),
                ("lens", lens is not None, lambda: np.asarray(lens, np.int32))]
    for name, present, make in optional:
        names.append(name if present else "")
        if present:
            inits[name] = make().astype(np.int32 if name == "lens" else np.float32)
    for name, how in (("h0", h0), ("c0", c0)):
        if name == "c0" and op != "LSTM":
            continue
        names.append(name if how else "")
        if how == "input":
            inputs[name] = state
        elif how == "const":
            inits[name] = rng.uniform(-0.5, 0.5, state).astype(np.float32)
    if peepholes:
        names.append("P")
        inits["P"] = rng.uniform(-0.5, 0.5, (directions, 3 * HID)).astype(np.float32)
    while names and names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node_outs = [o if k in outputs else "" for k, o in enumerate(outs)]
    while node_outs[-1] == "":
        node_outs.pop()
    direction = {1: "forward", 2: "bidirectional"}[directions]
    node = helper.make_node(op, names, node_outs, name=f"the_{op.lower()}", hidden_size=HID,
                            direction=attrs.pop("direction", direction), **attrs,
                            **({"layout": layout} if layout else {}))
    opset = 14 if layout else 13
    return make_model([node], inputs, [o for o in node_outs if o], inits, opset)


def if_on_shape(nested: bool = False, pick_then: bool = True, branch_init: bool = False):
    """If on a condition computed from the input's shape (constant once imported), as torch
    exports it; the branches read the outer input x. ``nested``: the taken branch holds
    another If. ``branch_init``: the taken branch has its own initializer."""
    def branch(name, nodes, out, inits=None):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, F, None)],
                                 [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])

    then_nodes = [_n("Sin", ["x"], "t_out")]
    inits = None
    if branch_init:
        then_nodes = [_n("Mul", ["x", "t_scale"], "t_mul"), _n("Sin", ["t_mul"], "t_out")]
        inits = {"t_scale": np.array([0.5, 1.0, 1.5, 2.0], np.float32)}
    if nested:
        inner = helper.make_node("If", ["cond"], ["t_out"], name="inner_if",
                                 then_branch=branch("tt", [_n("Tanh", ["x"], "tt_out")],
                                                    "tt_out"),
                                 else_branch=branch("te", [_n("Neg", ["x"], "te_out")],
                                                    "te_out"))
        then_nodes = [inner]
    node = helper.make_node("If", ["cond"], ["branch"], name="outer_if",
                            then_branch=branch("then", then_nodes, "t_out", inits),
                            else_branch=branch("else", [_n("Relu", ["x"], "e_out")], "e_out"))
    size = 4 if pick_then else 5
    nodes = [_n("Shape", ["x"], "s"), _n("Gather", ["s", "one"], "d"),
             _n("Equal", ["d", "size"], "cond"), node, _n("Add", ["branch", "x"], "y")]
    return make_model(nodes, X, ["y"], {"one": np.array(1, np.int64),
                                        "size": np.array(size, np.int64)})


def loop_model(style: str = "while", steps: int = 2, condition: str = "counter"):
    """A recurrent cell run by Loop, as tf2onnx writes a Keras SimpleRNN: the body reads
    step i of the outer sequence (x [1, 4] as 2 steps of 2 features) by a Gather at the
    iteration number, carries h and scans it out; y is the last h and every step's, side by
    side. ``style``: "while" (no trip count, the condition i + 1 < steps computed in the body,
    tf2onnx's while loop) or "count" (trip count ``steps``, the condition passed through, a
    scripted torch for loop). ``condition`` "state": the body's condition reads h (refused)."""
    rng = np.random.default_rng(4)
    inits = {"seq_shape": _i(2, 1, 2), "w": rng.uniform(-1, 1, (2, 3)).astype(np.float32),
             "u": rng.uniform(-1, 1, (3, 3)).astype(np.float32),
             "b": rng.uniform(-0.5, 0.5, (1, 3)).astype(np.float32),
             "h0": np.zeros((1, 3), np.float32), "limit": np.array(steps, np.int64),
             "one": np.array(1, np.int64), "zero": np.array(0, np.int64),
             "flat": _i(1, 3 * steps), "zf": np.float32(0.0)}
    body_nodes = [_n("Gather", ["seq", "i"], "xt", axis=0), _n("MatMul", ["xt", "w"], "xw"),
                  _n("MatMul", ["h_in", "u"], "hu"), _n("Add", ["xw", "hu"], "pre"),
                  _n("Add", ["pre", "b"], "pre_b"), _n("Tanh", ["pre_b"], "h_out"),
                  _n("Identity", ["h_out"], "h_scan")]
    if condition == "state":
        body_nodes += [_n("ReduceSum", ["h_out"], "h_sum", keepdims=0),
                       _n("Greater", ["h_sum", "zf"], "cond_out")]
    elif style == "while":
        body_nodes += [_n("Add", ["i", "one"], "next"), _n("Less", ["next", "limit"], "cond_out")]
    else:
        body_nodes += [_n("Identity", ["cond_in"], "cond_out")]
    body = helper.make_graph(
        body_nodes, "cell",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", F, [1, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", F, [1, 3]),
         helper.make_tensor_value_info("h_scan", F, [1, 3])])
    outer = [_n("Reshape", ["x", "seq_shape"], "seq")]
    if style == "while":
        outer.append(_n("Less", ["zero", "limit"], "cond0"))
        loop = helper.make_node("Loop", ["", "cond0", "h0"], ["h_last", "hs"], name="cell_loop",
                                body=body)
    else:
        loop = helper.make_node("Loop", ["limit", "", "h0"], ["h_last", "hs"], name="cell_loop",
                                body=body)
    nodes = [*outer, loop, _n("Reshape", ["hs", "flat"], "hs_flat"),
             _n("Concat", ["h_last", "hs_flat"], "y", axis=1)]
    return make_model(nodes, X, ["y"], inits)


def scan_model(input_direction: int = 0, output_direction: int = 0, output_axis: int = 1):
    """An RNN cell run by Scan, as older converters write one: x [1, 6] as [1, 3 steps, 2]
    scanned along axis 1 (``input_direction`` 1: from the end), h [1, 3] carried and scanned
    out along ``output_axis`` (``output_direction`` 1: stacked in reverse); a second scan
    input, a constant [3, 1] step bias, read along axis 0."""
    rng = np.random.default_rng(5)
    inits = {"shape": _i(1, 3, 2), "h0": np.zeros((1, 3), np.float32),
             "steps_bias": rng.uniform(-0.5, 0.5, (3, 1)).astype(np.float32),
             "flat": _i(1, 9)}
    body = helper.make_graph(
        [_n("MatMul", ["xt", "w"], "xw"), _n("MatMul", ["h_in", "u"], "hu"),
         _n("Add", ["xw", "hu"], "pre"), _n("Add", ["pre", "bt"], "pre_b"),
         _n("Tanh", ["pre_b"], "h_out"), _n("Identity", ["h_out"], "h_scan")],
        "cell",
        [helper.make_tensor_value_info("h_in", F, [1, 3]),
         helper.make_tensor_value_info("xt", F, [1, 2]),
         helper.make_tensor_value_info("bt", F, [1])],
        [helper.make_tensor_value_info("h_out", F, [1, 3]),
         helper.make_tensor_value_info("h_scan", F, None)],
        [numpy_helper.from_array(rng.uniform(-1, 1, (2, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.uniform(-1, 1, (3, 3)).astype(np.float32), "u")])
    scan = helper.make_node("Scan", ["h0", "xs", "steps_bias"], ["h_last", "hs"],
                            name="cell_scan", body=body, num_scan_inputs=2,
                            scan_input_axes=[1, 0], scan_input_directions=[input_direction, 0],
                            scan_output_axes=[output_axis],
                            scan_output_directions=[output_direction])
    nodes = [_n("Reshape", ["x", "shape"], "xs"), scan, _n("Reshape", ["hs", "flat"], "hs_flat"),
             _n("Concat", ["h_last", "hs_flat"], "y", axis=1)]
    return make_model(nodes, {"x": (1, 6)}, ["y"], inits)


def sequence_model(finish: str = "stack"):
    """x [1, 4] through ONNX sequence ops as TorchScript writes list code: split into pieces
    (SplitToSequence), a list grown by SequenceInsert (at the end and at the front), an item
    dropped (SequenceErase), one read (SequenceAt), the length (SequenceLength) scaling it,
    then ``finish``: "stack" (ConcatFromSequence along a new axis), "concat" (along axis 1),
    "at" (the item read, scaled)."""
    nodes = [_n("SplitToSequence", ["x", "two"], "pieces", axis=1),      # [1,2], [1,2]
             _n("Sin", ["x"], "sx"), _n("Slice", ["sx", "s0", "e2", "a1"], "head"),
             _n("SequenceEmpty", [], "empty"),
             _n("SequenceInsert", ["empty", "head"], "one"),
             _n("SequenceAt", ["pieces", "minus_one"], "last"),
             _n("SequenceInsert", ["one", "last", "zero"], "two_items"),
             _n("SequenceConstruct", ["head", "head"], "pair"),
             _n("SequenceAt", ["pair", "zero"], "first"),
             _n("SequenceInsert", ["two_items", "first"], "three"),
             _n("SequenceErase", ["three", "one_i"], "kept"),               # last, head
             _n("SequenceLength", ["kept"], "n"), _n("Cast", ["n"], "nf", to=F),
             _n("SequenceAt", ["kept", "zero"], "picked"),
             _n("Mul", ["picked", "nf"], "scaled")]
    if finish == "stack":
        nodes += [_n("ConcatFromSequence", ["kept"], "stacked", axis=1, new_axis=1),
                  _n("Reshape", ["stacked", "flat"], "y")]
    elif finish == "concat":
        nodes += [_n("ConcatFromSequence", ["kept"], "y", axis=1)]
    else:
        nodes += [_n("Identity", ["scaled"], "y")]
    inits = {"two": np.array(2, np.int64), "s0": _i(0), "e2": _i(2), "a1": _i(1),
             "minus_one": np.array(-1, np.int64), "zero": np.array(0, np.int64),
             "one_i": np.array(1, np.int64), "flat": _i(1, 4)}
    return make_model(nodes, X, ["y"], inits, opset=13)


def statistics_batch_norm(features: int = 4, groups: int = 3):
    """Keras' LayerNormalization as tf2onnx writes it: x [1, groups, features] reshaped to
    [1, groups, features, 1], its mean and variance over the features (ReduceMean,
    ReduceSumSquare of the centred values over the count) fed to a BatchNormalization of
    unit scale and zero bias, reshaped back, then Keras' gamma and beta."""
    rng = np.random.default_rng(6)
    inits = {"r4": _i(1, groups, features, 1), "r3": _i(1, groups, features),
             "ones": np.ones(groups, np.float32), "zeros": np.zeros(groups, np.float32),
             "axes": _i(0, 2, 3), "count": np.float32(features),
             "gamma": rng.uniform(0.5, 1.5, features).astype(np.float32),
             "beta": rng.uniform(-0.5, 0.5, features).astype(np.float32)}
    nodes = [_n("Reshape", ["x", "r4"], "xr"),
             _n("ReduceMean", ["xr"], "m4", axes=[0, 2, 3], keepdims=1),
             _n("Squeeze", ["m4", "axes"], "mean"), _n("Sub", ["xr", "m4"], "centred"),
             _n("ReduceSumSquare", ["centred"], "ss", axes=[0, 2, 3], keepdims=0),
             _n("Div", ["ss", "count"], "var"),
             _n("BatchNormalization", ["xr", "ones", "zeros", "mean", "var"], "bn",
                epsilon=1e-3),
             _n("Reshape", ["bn", "r3"], "back"), _n("Mul", ["back", "gamma"], "scaled"),
             _n("Add", ["scaled", "beta"], "y")]
    return make_model(nodes, {"x": (1, groups, features)}, ["y"], inits)


def contrib_model(op: str, inputs: dict, inits: dict | None = None, n_out: int = 1, **attrs):
    """One onnxruntime contrib node (domain com.microsoft) reading the inputs then the
    initializers, as onnxruntime's optimizer saves it."""
    names = list(inputs) + list(inits or {})
    outs = [f"y{i}" for i in range(n_out)] if n_out > 1 else ["y"]
    node = helper.make_node(op, names, outs, domain="com.microsoft", name=f"the_{op.lower()}",
                            **attrs)
    model = make_model([node], inputs, outs, inits, opset=13)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def ml_model(op: str, inputs=X, outputs=("y",), opset: int = 17, kept=None, **attrs):
    """One ``ai.onnx.ml`` node reading the inputs (scikit-learn models as skl2onnx writes
    them); ``kept``: its outputs that are the model's (default all). The model imports both
    operator domains."""
    node = helper.make_node(op, list(inputs), list(outputs), domain="ai.onnx.ml", **attrs)
    model = make_model([node], inputs, list(kept or outputs), opset=opset)
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return model


def ml_classifier(kept=("y",), **attrs):
    """A LinearClassifier on 4 features (3 classes unless the attributes say otherwise): its
    outputs "label" (int64) and "y" (the scores), those in ``kept`` the model's."""
    base = {"coefficients": rand(3, 4).ravel().tolist(), "intercepts": rand(3).tolist(),
            "classlabels_ints": [0, 1, 2]}
    model = ml_model("LinearClassifier", outputs=("label", "y"), kept=kept, **{**base, **attrs})
    for out in model.graph.output:
        if out.name == "label":
            out.type.tensor_type.elem_type = TensorProto.INT64
    return model


def make_ml_extractor():
    """A table of labels read at the ArgMax of x (a classifier's label, as skl2onnx writes
    it), cast to float."""
    nodes = [_n("ArgMax", ["x"], "i", axis=1),
             helper.make_node("ArrayFeatureExtractor", ["t", "i"], ["l"], domain="ai.onnx.ml"),
             _n("Cast", ["l"], "y", to=F)]
    model = make_model(nodes, X, ["y"], {"t": _i(3, 7, 9, 11)}, opset=17)
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return model


# two trees on 4 features: (tree, node, mode, feature, threshold, true node, false node), every
# branch mode; leaves carry weights per output (TreeEnsembleClassifier / Regressor)
_TREE_NODES = [(0, 0, "BRANCH_LEQ", 0, 0.1, 1, 2), (0, 1, "BRANCH_LT", 1, -0.3, 3, 4),
               (0, 2, "BRANCH_GTE", 2, 0.5, 5, 6), (0, 3, "LEAF", 0, 0.0, 0, 0),
               (0, 4, "LEAF", 0, 0.0, 0, 0), (0, 5, "LEAF", 0, 0.0, 0, 0),
               (0, 6, "BRANCH_GT", 0, 0.8, 7, 8), (0, 7, "LEAF", 0, 0.0, 0, 0),
               (0, 8, "LEAF", 0, 0.0, 0, 0), (1, 0, "BRANCH_LEQ", 3, 0.0, 1, 2),
               (1, 1, "LEAF", 0, 0.0, 0, 0), (1, 2, "LEAF", 0, 0.0, 0, 0)]
_TREE_LEAVES = [(0, 3), (0, 4), (0, 5), (0, 7), (0, 8), (1, 1), (1, 2)]


def make_tree_ensemble(op: str, outputs: int = 3, weights=None, binary: bool = False,
                       kept=("y",), **attrs):
    """A TreeEnsembleClassifier (outputs "label", "y", those in ``kept`` the model's;
    ``outputs`` classes, or one score column for two labels when ``binary``) or
    TreeEnsembleRegressor (``outputs`` targets) on 4 features, as skl2onnx writes them;
    ``weights`` [7 leaves, columns] (default random)."""
    columns = 1 if binary else outputs
    w = (np.random.default_rng(5).uniform(-1, 1, (len(_TREE_LEAVES), columns))
         if weights is None else np.asarray(weights, np.float64))
    t, n, mode, f, v, yes, no = zip(*_TREE_NODES, strict=True)
    fields = {"nodes_treeids": list(t), "nodes_nodeids": list(n), "nodes_modes": list(mode),
              "nodes_featureids": list(f), "nodes_values": list(v),
              "nodes_truenodeids": list(yes), "nodes_falsenodeids": list(no)}
    prefix = "class" if op == "TreeEnsembleClassifier" else "target"
    cells = [(tree, node, c, float(w[k, c])) for k, (tree, node) in enumerate(_TREE_LEAVES)
             for c in range(columns)]
    for name, col in zip(("treeids", "nodeids", "ids", "weights"), zip(*cells, strict=True),
                         strict=True):
        fields[f"{prefix}_{name}"] = list(col)
    if op == "TreeEnsembleClassifier":
        fields["classlabels_int64s"] = [0, 1] if binary else list(range(outputs))
        model = ml_model(op, outputs=("label", "y"), kept=kept, **{**fields, **attrs})
        for out in model.graph.output:
            if out.name == "label":
                out.type.tensor_type.elem_type = TensorProto.INT64
        return model
    return ml_model(op, n_targets=outputs, **{**fields, **attrs})


def make_svm(op: str, kernel: str = "RBF", classes: int = 3, kept=("label", "y"), **attrs):
    """An SVMClassifier (outputs "label", "y", those in ``kept`` the model's: one-vs-one over
    ``classes`` classes, 3, 2, 3, 2 support vectors per class) or SVMRegressor (5 support
    vectors) on 4 features, as skl2onnx writes them; ``attrs`` override the generated
    attributes (None: leave it out)."""
    rng = np.random.default_rng(11)
    per_class = [3, 2, 3, 2][:classes]
    count = sum(per_class) if op == "SVMClassifier" else 5
    fields = {"kernel_type": kernel, "kernel_params": [0.4, 0.5, 3.0],
              "support_vectors": rng.uniform(-1, 1, (count, 4)).ravel().tolist()}
    if op == "SVMClassifier":
        fields.update(vectors_per_class=per_class, classlabels_ints=list(range(classes)),
                      coefficients=rng.uniform(-1, 1, (classes - 1) * count).tolist(),
                      rho=rng.uniform(-0.3, 0.3, classes * (classes - 1) // 2).tolist())
        model = ml_model(op, outputs=("label", "y"), kept=kept, **_given({**fields, **attrs}))
        for out in model.graph.output:
            if out.name == "label":
                out.type.tensor_type.elem_type = TensorProto.INT64
        return model
    fields.update(n_supports=count, coefficients=rng.uniform(-2, 2, count).tolist(), rho=[0.25])
    return ml_model(op, **_given({**fields, **attrs}))


def _given(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if v is not None}

OP_MODELS: dict = {
    "ai.onnx.ml.TreeEnsembleClassifier": (
        lambda: make_tree_ensemble("TreeEnsembleClassifier", post_transform="SOFTMAX"),
        -1.0, 1.0),
    "ai.onnx.ml.TreeEnsembleRegressor": (
        lambda: make_tree_ensemble("TreeEnsembleRegressor", outputs=2, base_values=[0.5, -1.0]),
        -1.0, 1.0),
    "ai.onnx.ml.SVMClassifier": (lambda: make_svm("SVMClassifier", kept=("y",)), -1.0, 1.0),
    "ai.onnx.ml.SVMRegressor": (lambda: make_svm("SVMRegressor", kernel="POLY"), -1.0, 1.0),
    # scikit-learn's operators (converters/ml.py)
    "ai.onnx.ml.Scaler": (lambda: ml_model("Scaler", offset=[0.1, -0.2, 0.3, 0.0],
                                           scale=[2.0, 0.5, 1.5, -1.0]), -2.0, 2.0),
    "ai.onnx.ml.LinearClassifier": (lambda: ml_classifier(post_transform="SOFTMAX"), -2.0, 2.0),
    "ai.onnx.ml.LinearRegressor": (lambda: ml_model(
        "LinearRegressor", coefficients=rand(2, 4).ravel().tolist(), intercepts=[0.5, -0.25],
        targets=2), -2.0, 2.0),
    "ai.onnx.ml.Normalizer": (lambda: ml_model("Normalizer", norm="L2"), 0.25, 2.0),
    "ai.onnx.ml.ArrayFeatureExtractor": (lambda: make_ml_extractor(), -2.0, 2.0),
    "ai.onnx.ml.Imputer": (lambda: ml_model("Imputer", replaced_value_float=0.5,
                                            imputed_value_floats=[1.0, -1.0, 2.0, 0.0]),
                           -1.0, 1.0),
    "ai.onnx.ml.Binarizer": (lambda: ml_model("Binarizer", threshold=0.25), -1.0, 1.0),
    **{op: (_unary(op), -2.0, 2.0) for op in (
        "Abs", "Atan", "Cos", "Erf", "Exp", "Floor", "Neg", "Relu", "Sigmoid", "Sign", "Sin",
        "Tanh", "Identity", "Dropout", "Softplus")},
    **{op: (_unary(op), 0.25, 4.0) for op in ("Log", "Reciprocal", "Sqrt")},
    **{op: (_binary(op), -2.0, 2.0) for op in ("Add", "Sub", "Mul", "Div")},
    **{op: (_cmp(op), -1.0, 1.0) for op in (
        "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")},
    **{op: (_logic(op), -1.0, 1.0) for op in ("And", "Or", "Xor")},
    **{op: (_shape_mul(op), -1.0, 1.0) for op in ("Shape", "Size")},
    **{op: (_variadic(op), -2.0, 2.0) for op in ("Max", "Min", "Sum", "Mean")},
    "LeakyRelu": (_unary("LeakyRelu", alpha=0.1), -2.0, 2.0),
    "Elu": (_unary("Elu", alpha=0.5), -2.0, 2.0),
    "Gelu": (lambda: one_node("Gelu", X, opset=20), -2.0, 2.0),
    "Clip": (lambda: one_node("Clip", X, {"lo": np.float32(-0.5), "hi": np.float32(0.5)}),
             -2.0, 2.0),
    "Not": (lambda: _to_float([_n("Greater", ["x", "z"], "p"), _n("Not", ["p"], "b")],
                              inits={"z": np.float32(0.0)}), -1.0, 1.0),
    "Where": (lambda: make_model([_n("Greater", ["x", "z"], "p"), _n("Neg", ["x"], "m"),
                                  _n("Where", ["p", "x", "m"], "y")], X, ["y"],
                                 {"z": np.float32(0.0)}), -1.0, 1.0),
    "Cast": (lambda: _to_float([_n("Mul", ["x", "k"], "t"), _n("Cast", ["t"], "b",
                                                                 to=TensorProto.INT32)],
                               inits={"k": np.float32(3.0)}), -2.0, 2.0),
    "ArgMax": (lambda: _to_float([_n("ArgMax", ["x"], "b", axis=1)]), -1.0, 1.0),
    "ArgMin": (lambda: _to_float([_n("ArgMin", ["x"], "b", axis=1, keepdims=0)]), -1.0, 1.0),
    "OneHot": (lambda: make_model([_n("ArgMax", ["x"], "a", axis=1),
                                   _n("OneHot", ["a", "d", "v"], "y")], X, ["y"],
                                  {"d": _i(4), "v": np.array([0, 1], np.float32)}), -1.0, 1.0),
    "Pow": (lambda: make_model([_n("Pow", ["x", "two"], "p"), _n("Pow", ["c", "x"], "q"),
                                _n("Add", ["p", "q"], "y")], X, ["y"],
                               {"two": np.float32(2.0), "c": np.float32(1.5)}), -1.0, 1.0),
    "Constant": (lambda: make_model([helper.make_node("Constant", [], ["c"],
                                                      value_floats=[0.5, 1, 2, 3]),
                                     _n("Add", ["x", "c"], "y")], X, ["y"]), -1.0, 1.0),
    "Gemm": (lambda: one_node("Gemm", X, {"w": rand(3, 4), "b": rand(3)}, transB=1), -1.0, 1.0),
    "MatMul": (lambda: one_node("MatMul", X, {"w": rand(4, 3)}), -1.0, 1.0),
    "Conv": (lambda: one_node("Conv", IMG, {"w": rand(3, 2, 3, 3)}, pads=[1, 1, 1, 1]),
             -1.0, 1.0),
    "ConvTranspose": (lambda: one_node("ConvTranspose", IMG, {"w": rand(2, 1, 2, 2)},
                                       strides=[2, 2]), -1.0, 1.0),
    "BatchNormalization": (lambda: one_node("BatchNormalization", IMG, {
        "s": rand(2), "b": rand(2), "m": rand(2), "v": rand(2, low=0.5, high=1.5)}), -1.0, 1.0),
    "AveragePool": (lambda: one_node("AveragePool", IMG, kernel_shape=[2, 2]), -1.0, 1.0),
    "MaxPool": (lambda: one_node("MaxPool", IMG, kernel_shape=[2, 2], strides=[2, 2]),
                -1.0, 1.0),
    "GlobalAveragePool": (lambda: one_node("GlobalAveragePool", IMG), -1.0, 1.0),
    "LRN": (lambda: one_node("LRN", {"x": (1, 5, 2, 2)}, size=3, alpha=0.5, bias=1.0),
            -1.5, 1.5),
    "GlobalMaxPool": (lambda: one_node("GlobalMaxPool", IMG), -1.0, 1.0),
    "ReduceSum": (lambda: one_node("ReduceSum", IMG, {"a": _i(1)}), -1.0, 1.0),
    "ReduceMean": (lambda: one_node("ReduceMean", IMG, axes=[2, 3]), -1.0, 1.0),
    "ReduceMax": (lambda: one_node("ReduceMax", IMG, axes=[1]), -1.0, 1.0),
    # a rank-1 tensor (no batch axis in the model)
    "Softmax": (lambda: one_node("Softmax", {"x": (4,)}), -2.0, 2.0),
    "Flatten": (lambda: one_node("Flatten", IMG), -1.0, 1.0),
    "Reshape": (lambda: one_node("Reshape", IMG, {"s": _i(1, -1)}), -1.0, 1.0),
    "Squeeze": (lambda: one_node("Squeeze", {"x": (1, 4, 1)}, {"a": _i(2)}), -1.0, 1.0),
    "Unsqueeze": (lambda: one_node("Unsqueeze", X, {"a": _i(1)}), -1.0, 1.0),
    "Transpose": (lambda: one_node("Transpose", IMG, perm=[0, 2, 3, 1]), -1.0, 1.0),
    "Concat": (lambda: make_model([_n("Neg", ["x"], "m"), _n("Concat", ["x", "m"], "y",
                                                              axis=1)], X, ["y"]), -1.0, 1.0),
    "Slice": (lambda: one_node("Slice", X, {"s": _i(1), "e": _i(3), "a": _i(1)}), -1.0, 1.0),
    "Split": (lambda: make_model([helper.make_node("Split", ["x", "s"], ["p", "q"], axis=1),
                                  _n("Sub", ["p", "q"], "y")], X, ["y"], {"s": _i(2, 2)}),
              -1.0, 1.0),
    "Gather": (lambda: one_node("Gather", X, {"i": _i(3, 0)}, axis=1), -1.0, 1.0),
    "Expand": (lambda: one_node("Expand", {"x": (1, 1, 4)}, {"s": _i(1, 3, 4)}), -1.0, 1.0),
    "Tile": (lambda: one_node("Tile", X, {"r": _i(1, 2)}), -1.0, 1.0),
    "ScatterND": (lambda: make_model([_n("Gather", ["x", "g"], "u", axis=1),
                                      _n("Sin", ["u"], "s"),
                                      _n("ScatterND", ["x", "i", "s"], "y")], X, ["y"],
                                     {"g": _i(0, 1), "i": _i([[0, 3], [0, 0]])}), -2.0, 2.0),
    "Pad": (lambda: one_node("Pad", X, {"p": _i(0, 1, 0, 2)}), -1.0, 1.0),
    "Resize": (lambda: make_model([helper.make_node("Resize", ["x", "", "s"], ["y"],
                                                    mode="nearest")], IMG, ["y"],
                                  {"s": np.array([1, 1, 2, 2], np.float32)}), -1.0, 1.0),
    "If": (if_on_shape, -2.0, 2.0),
    "Loop": (loop_model, -1.5, 1.5),
    "IsNaN": (lambda: _to_float([_n("Sqrt", ["x"], "r"), _n("IsNaN", ["r"], "b")]), 0.0, 2.0),
    "IsInf": (lambda: _to_float([_n("IsInf", ["x"], "b", detect_negative=0)], opset=10),
              -1.0, 1.0),
    # onnxruntime's contrib ops from a saved optimized model (converters/contrib.py)
    "com.microsoft.FusedConv": (lambda: contrib_model(
        "FusedConv", IMG, {"w": rand(3, 2, 3, 3), "b": rand(3, seed=2)}, pads=[1, 1, 1, 1],
        activation="LeakyRelu", activation_params=[0.2]), -1.0, 1.0),
    "com.microsoft.FusedGemm": (lambda: contrib_model(
        "FusedGemm", X, {"w": rand(3, 4), "b": rand(3, seed=2)}, transB=1,
        activation="Relu"), -1.0, 1.0),
    "com.microsoft.FusedMatMul": (lambda: contrib_model(
        "FusedMatMul", {"x": (1, 2, 3)}, {"w": rand(4, 3)}, transB=1, alpha=0.5), -1.0, 1.0),
    "com.microsoft.QuickGelu": (lambda: contrib_model("QuickGelu", X, alpha=1.5), -3.0, 3.0),
    "com.microsoft.Gelu": (lambda: contrib_model("Gelu", X), -3.0, 3.0),
    "com.microsoft.BiasGelu": (lambda: contrib_model("BiasGelu", X, {"b": rand(4)}), -3.0,
                               3.0),
    "com.microsoft.FastGelu": (lambda: contrib_model("FastGelu", X, {"b": rand(4)}), -3.0,
                               3.0),
    "com.microsoft.SkipLayerNormalization": (lambda: contrib_model(
        "SkipLayerNormalization", {"x": (1, 3, 4)},
        {"skip": rand(1, 3, 4, seed=3), "g": rand(4, low=0.5, high=1.5), "beta": rand(4),
         "bias": rand(4, seed=4)}, epsilon=1e-5), -1.0, 1.0),
    "Scan": (scan_model, -1.5, 1.5),
    # lists resolved at import (converters/sequence.py)
    **{op: (sequence_model, -2.0, 2.0) for op in (
        "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceConstruct",
        "SplitToSequence", "ConcatFromSequence")},
    "SequenceAt": (lambda: sequence_model("at"), -2.0, 2.0),
    "SequenceLength": (lambda: sequence_model("at"), -2.0, 2.0),
    "TopK": (lambda: make_model([helper.make_node("TopK", ["x", "k"], ["y", "i"])], X, ["y"],
                                {"k": _i(3)}, 11), -1.0, 1.0),
    # unrolled over their steps (converters/recurrent.py)
    "RNN": (lambda: recurrent_model("RNN", h0="const", outputs=(0,)), -1.5, 1.5),
    "GRU": (lambda: recurrent_model("GRU", linear_before_reset=1, outputs=(1,)), -1.5, 1.5),
    "LSTM": (lambda: recurrent_model("LSTM", directions=2, peepholes=True, outputs=(0,)),
             -1.5, 1.5),
    "Upsample": (lambda: one_node("Upsample", IMG, {"s": np.array([1, 1, 2, 2], np.float32)},
                                  opset=9), -1.0, 1.0),
    # imported as compositions of other IR ops (converters/composite.py)
    "HardSigmoid": (_unary("HardSigmoid", alpha=0.3, beta=0.4), -4.0, 4.0),
    "HardSwish": (lambda: one_node("HardSwish", X, opset=14), -5.0, 5.0),
    "PRelu": (lambda: one_node("PRelu", IMG, {"s": rand(2, 1, 1, low=-0.5, high=1.5)}),
              -1.0, 1.0),
    "Softsign": (_unary("Softsign"), -3.0, 3.0),
    "Selu": (_unary("Selu"), -2.0, 2.0),
    "Celu": (lambda: one_node("Celu", X, opset=12, alpha=0.5), -2.0, 2.0),
    "Mish": (lambda: one_node("Mish", X, opset=18), -3.0, 3.0),
    "Swish": (lambda: one_node("Swish", X, opset=24, alpha=1.5), -4.0, 4.0),
    # 2 channels of 2x3 blocks, strides (1, 2), dilation (2, 1), pads: a 5x6 image
    "Col2Im": (lambda: one_node("Col2Im", {"x": (1, 12, 12)}, {"i": _i(5, 6), "b": _i(2, 3)},
                                opset=18, strides=[1, 2], dilations=[2, 1],
                                pads=[1, 0, 0, 1]), -1.0, 1.0),
    "Ceil": (_unary("Ceil"), -2.0, 2.0),
    "Mod": (lambda: one_node("Mod", X, {"d": np.array([0.7, -1.3, 0.25, 3.0], np.float32)},
                             fmod=1), -4.0, 4.0),
    "LogSoftmax": (lambda: one_node("LogSoftmax", X), -2.0, 2.0),
    "ThresholdedRelu": (lambda: one_node("ThresholdedRelu", X, opset=10, alpha=0.3), -1.0, 1.0),
    "Shrink": (lambda: one_node("Shrink", X, opset=9, lambd=0.4, bias=0.1), -1.0, 1.0),
    "ReduceMin": (lambda: one_node("ReduceMin", IMG, axes=[1]), -1.0, 1.0),
    "ReduceProd": (lambda: one_node("ReduceProd", IMG, axes=[2, 3], keepdims=0), 0.5, 1.5),
    "ReduceL1": (lambda: one_node("ReduceL1", IMG, axes=[2, 3], keepdims=0), -1.0, 1.0),
    "ReduceL2": (lambda: one_node("ReduceL2", IMG, {"a": _i(1)}, opset=18), -1.0, 1.0),
    "ReduceSumSquare": (lambda: one_node("ReduceSumSquare", IMG, axes=[1]), -1.0, 1.0),
    "ReduceLogSumExp": (lambda: one_node("ReduceLogSumExp", IMG, axes=[1]), -2.0, 2.0),
    "LayerNormalization": (lambda: one_node("LayerNormalization", {"x": (1, 3, 4)},
                                            {"s": rand(4), "b": rand(4, seed=2)}, opset=17),
                           -1.0, 1.0),
    # (no epsilon: a constant input, the box's centre, has no variance; x * c varies)
    "MeanVarianceNormalization": (lambda: make_model(
        [_n("Mul", ["x", "c"], "t"), _n("MeanVarianceNormalization", ["t"], "y", axes=[2, 3])],
        IMG, ["y"], {"c": rand(2, 4, 4, low=0.5, high=1.5)}), 0.5, 1.5),
    "LpPool": (lambda: one_node("LpPool", IMG, kernel_shape=[2, 2], pads=[1, 0, 0, 1],
                                strides=[2, 1]), -1.0, 1.0),
    "GlobalLpPool": (lambda: one_node("GlobalLpPool", IMG, p=1), -1.0, 1.0),
    "InstanceNormalization": (lambda: one_node("InstanceNormalization", IMG,
                                               {"s": rand(2), "b": rand(2, seed=2)}),
                              -1.0, 1.0),
    # rearrangements and fixed linear maps (converters/rearrange.py)
    "GatherElements": (lambda: one_node("GatherElements", IMG, {"i": np.random.default_rng(3)
                                        .integers(-4, 4, (1, 2, 3, 4))}, axis=2), -1.0, 1.0),
    "GatherND": (lambda: one_node("GatherND", IMG, {"i": _i([[0, 1, 2], [0, 0, -1]])}),
                 -1.0, 1.0),
    "DepthToSpace": (lambda: one_node("DepthToSpace", {"x": (1, 8, 2, 3)}, blocksize=2,
                                      mode="CRD"), -1.0, 1.0),
    "SpaceToDepth": (lambda: one_node("SpaceToDepth", IMG, blocksize=2), -1.0, 1.0),
    "ReverseSequence": (lambda: one_node("ReverseSequence", {"x": (3, 2, 2)}, {"n": _i(3, 1)}),
                        -1.0, 1.0),
    "CumSum": (lambda: one_node("CumSum", IMG, {"a": _i(2)}, opset=14, reverse=1), -1.0, 1.0),
    "Trilu": (lambda: one_node("Trilu", IMG, {"k": _i(1)}, opset=14, upper=0), -1.0, 1.0),
    # rounding and quantisation (converters/quantize.py): a QDQ pair on uint8 and int8
    "Round": (lambda: one_node("Round", X, opset=11), -3.0, 3.0),
    "QuantizeLinear": (lambda: _qdq(np.uint8(100)), -1.0, 1.0),
    "DequantizeLinear": (lambda: _qdq(np.array([-3, 0], np.int8), axis=1), -1.0, 1.0),
    # spatial sampling (converters/grid_sample.py): the image read at a grid 1.3 x (values
    # past the image's edges), so the grid depends on the input
    "GridSample": (lambda: _grid_sample_of_input("bilinear", "zeros", 0, opset=16), -1.0, 1.0),
    # x^T W x per batch: a constant contraction, then one of two input-dependent operands
    "Einsum": (lambda: make_model([_n("Einsum", ["x", "w"], "xw", equation="bi,ij->bj"),
                                   _n("Einsum", ["xw", "x"], "y", equation="bj,bj->b")],
                                  X, ["y"], {"w": rand(4, 4)}, opset=12), -1.0, 1.0),
}

# Further uses of listed ops whose conversion takes another route (checked like OP_MODELS
# by test_op_bounds).
VARIANT_MODELS: dict = {
    "Conv(4 spatial axes, two with a unit kernel)": (lambda: one_node(
        "Conv", {"x": (1, 2, 3, 4, 4, 1)}, {"w": rand(3, 2, 1, 2, 2, 1)}, strides=[1, 2, 1, 1]),
        -1.0, 1.0),
    "com.microsoft.FusedConv(Clip, with Z)": (lambda: contrib_model(
        "FusedConv", IMG, {"w": rand(3, 2, 3, 3), "b": rand(3, seed=2),
                           "z": rand(1, 3, 2, 2, seed=3)},
        strides=[2, 2], pads=[1, 1, 0, 0], activation="Clip", activation_params=[-0.5, 0.5]),
        -1.0, 1.0),
    "com.microsoft.FusedGemm(LeakyRelu, alpha)": (lambda: contrib_model(
        "FusedGemm", X, {"w": rand(4, 3), "b": rand(3, seed=2)}, alpha=0.5, beta=2.0,
        activation="LeakyRelu", activation_alpha=0.1), -1.0, 1.0),
    "com.microsoft.FusedConv(HardSigmoid)": (lambda: contrib_model(
        "FusedConv", IMG, {"w": rand(3, 2, 1, 1)}, activation="HardSigmoid",
        activation_params=[0.3, 0.4]), -2.0, 2.0),
    "com.microsoft.FusedGemm(HardSigmoid)": (lambda: contrib_model(
        "FusedGemm", X, {"w": rand(3, 4)}, transB=1, activation="HardSigmoid",
        activation_alpha=0.3, activation_beta=0.4), -2.0, 2.0),
    "com.microsoft.FusedGemm(Tanh)": (lambda: contrib_model(
        "FusedGemm", X, {"w": rand(3, 4)}, transB=1, activation="Tanh"), -1.0, 1.0),
    "Scan(reversed input and output, output axis 0)": (
        lambda: scan_model(input_direction=1, output_direction=1, output_axis=0), -1.5, 1.5),
    "ConcatFromSequence(concat)": (lambda: sequence_model("concat"), -2.0, 2.0),
    "ReverseSequence(batch axis 0)": (lambda: one_node(
        "ReverseSequence", {"x": (2, 3, 2)}, {"n": _i(2, 0)}, batch_axis=0, time_axis=1),
        -1.0, 1.0),
    "Swish(alpha < 0: a product)": (lambda: one_node("Swish", X, opset=24, alpha=-0.5),
                                    -4.0, 4.0),
    "com.microsoft.QuickGelu(alpha 0: a product)": (lambda: contrib_model("QuickGelu", X,
                                                                          alpha=0.0),
                                                    -3.0, 3.0),
    "Loop(trip count)": (lambda: loop_model("count", steps=2), -1.5, 1.5),
    "BatchNormalization(input statistics)": (statistics_batch_norm, -1.0, 1.0),
    "Resize(nearest, tf_half_pixel_for_nn)": (lambda: make_model([helper.make_node(
        "Resize", ["x", "", "s"], ["y"], mode="nearest",
        coordinate_transformation_mode="tf_half_pixel_for_nn")], IMG, ["y"],
        {"s": np.array([1, 1, 2, 1.5], np.float32)}, opset=13), -1.0, 1.0),
    "GridSample(input grid, nearest, reflection)": (
        lambda: _grid_sample_of_input("nearest", "reflection", 1, opset=20), -1.0, 1.0),
    "GridSample(constant grid, cubic, border)": (
        lambda: one_node("GridSample", IMG, {"g": rand(1, 3, 5, 2, low=-1.3, high=1.3)},
                         opset=20, mode="cubic", padding_mode="border"), -1.0, 1.0),
    "GridSample(constant grid, linear, zeros)": (
        lambda: one_node("GridSample", IMG, {"g": rand(1, 3, 5, 2, low=-1.3, high=1.3)},
                         opset=16, align_corners=1), -1.0, 1.0),
    "Mod(integer, floor)": (lambda: make_model(
        [_n("Mul", ["x", "k"], "xk"), _n("Cast", ["xk"], "xi", to=TensorProto.INT32),
         _n("Mod", ["xi", "d"], "r", fmod=0), _n("Cast", ["r"], "y", to=TensorProto.FLOAT)],
        X, ["y"], {"k": np.float32(10.0), "d": np.array([3, -4, 5, 7], np.int32)}), -3.0, 3.0),
    "SVMClassifier(label)": (lambda: make_svm("SVMClassifier", kept=("label",)), -1.0, 1.0),
    "SVMClassifier(binary, sigmoid)": (lambda: make_svm(
        "SVMClassifier", kernel="SIGMOID", classes=2, kept=("y",)), -1.0, 1.0),
    "Resize(linear)": (lambda: make_model([helper.make_node(
        "Resize", ["x", "", "s"], ["y"], mode="linear")], IMG, ["y"],
        {"s": np.array([1, 1, 2, 1.5], np.float32)}), -1.0, 1.0),
    "Resize(cubic, sizes)": (lambda: make_model([helper.make_node(
        "Resize", ["x", "", "", "n"], ["y"], mode="cubic",
        coordinate_transformation_mode="align_corners")], IMG, ["y"], {"n": _i(1, 2, 7, 3)}),
        -1.0, 1.0),
    "Upsample(linear)": (lambda: one_node("Upsample", IMG, {"s": np.array(
        [1, 1, 2, 2], np.float32)}, opset=9, mode="linear"), -1.0, 1.0),
    "PRelu(scalar)": (lambda: one_node("PRelu", X, {"s": np.array([0.3], np.float32)}),
                      -1.0, 1.0),
    "Shrink(continuous)": (lambda: one_node("Shrink", X, opset=9, lambd=0.3, bias=0.3),
                           -1.0, 1.0),
    # (ONNX Clip ends are scalars: -mean(x) / 2 below, 0.6 above)
    "Clip(input-dependent ends)": (lambda: make_model(
        [_n("ReduceMean", ["x"], "r", keepdims=0), _n("Neg", ["r"], "m"),
         _n("Mul", ["m", "h"], "lo"),
         helper.make_node("Clip", ["x", "lo", "c"], ["y"])], X, ["y"],
        {"h": np.float32(0.5), "c": np.float32(0.6)}), -1.0, 1.0),
}
