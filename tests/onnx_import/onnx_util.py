"""Build small ONNX models with onnx.helper and compare our import with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine.forward import run_graph
from bounds.registry import rules
from verifier.onnx_import.loader import import_proto

TOL = 1e-5


def make_model(nodes, inputs: dict, outputs: list[str], inits: dict | None = None,
               opset: int = 13, batch_symbolic: bool = False) -> onnx.ModelProto:
    """A model with float inputs ``{name: shape}``, initializers ``{name: array}``."""
    def vi(name, shape):
        dims = list(shape)
        if batch_symbolic:
            dims[0] = "N"
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    graph = helper.make_graph(
        nodes, "g", [vi(k, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def one_node(op: str, inputs: dict, inits: dict | None = None, opset: int = 13,
             n_out: int = 1, **attrs) -> onnx.ModelProto:
    """A model with one ``op`` node reading the inputs then the initializers, in order."""
    names = list(inputs) + list(inits or {})
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **attrs)
    return make_model([node], inputs, outs, inits, opset)


def ort_outputs(model: onnx.ModelProto, feeds: list[dict]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    return [session.run(None, f) for f in feeds]


def compare(model: onnx.ModelProto, n: int = 4, low: float = -2.0, high: float = 2.0,
            seed: int = 0, simplify: bool = True, tol: float = TOL) -> float:
    """Import ``model``, run a batch of ``n`` random samples through run_graph and each sample
    through onnxruntime; assert agreement and return the worst relative error."""
    data = model.SerializeToString()
    imported = import_proto(onnx.load_model_from_string(data), data, simplify=simplify)
    missing = [op for op in imported.graph.op_types if op not in rules()]
    assert not missing, f"the importer emits ops with no rule: {missing}"
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(low, high, (n, *t.shape)).astype(np.float32) for t in imported.graph.inputs]
    ours = run_graph(imported.graph, *(torch.from_numpy(x) for x in xs))
    feeds = [{name: x[i].reshape(shape) for name, x, shape in
              zip(imported.input_names, xs, imported.onnx_input_shapes, strict=True)}
             for i in range(n)]
    refs = ort_outputs(model, feeds)
    worst = 0.0
    for k, out in enumerate(ours):
        got = out.detach().numpy().astype(np.float64)
        ref = np.stack([r[k] for r in refs]).astype(np.float64)
        assert got.size == ref.size, f"output {k}: shape {got.shape} vs onnxruntime {ref.shape}"
        got = got.reshape(ref.shape)
        err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
        worst = max(worst, float(np.max(err, initial=0.0)))
    assert worst <= tol, f"relative error {worst:.3g}"
    return worst


def rand(*shape, seed: int = 1, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


FEATURES = 3


def sequence_model(dims=("N", "seq", FEATURES), extra: dict | None = None) -> onnx.ModelProto:
    """A model for symbolic sequence lengths: x[dims] -> mean over the sequence -> Gemm ->
    Relu -> Gemm -> y[1, 2] (plus ``extra`` inputs {name: dims}, added to the mean's result
    through a Gemm of their own)."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(0, 1, (4, FEATURES)), "b1": rng.normal(0, 0.1, 4),
             "w2": rng.normal(0, 1, (2, 4)), "b2": np.zeros(2), "axes": np.array([1])}
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
             helper.make_node("Gemm", ["m", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], transB=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))]
    for name, shape in (extra or {}).items():
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        inits[f"{name}_w"] = rng.normal(0, 1, (FEATURES, shape[-1]))
        nodes[0:1] = [helper.make_node("ReduceMean", ["x", "axes"], ["m0"], keepdims=0),
                      helper.make_node("Gemm", [name, f"{name}_w"], [f"{name}_p"], transB=1),
                      helper.make_node("Add", ["m0", f"{name}_p"], ["m"])]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v.astype(np.int64 if k == "axes" else np.float32), k)
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def sequence_spec(center: np.ndarray, eps: float, y0_at_least: float) -> str:
    """A box of +-eps around ``center`` and Y_0 >= ``y0_at_least`` (sequence_model's two
    outputs)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(center.size)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    for i, v in enumerate(center.ravel().tolist()):
        lines += [f"(assert (>= X_{i} {v - eps!r}))", f"(assert (<= X_{i} {v + eps!r}))"]
    lines.append(f"(assert (>= Y_0 {y0_at_least!r}))")
    return "\n".join(lines) + "\n"
