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
