"""End to end for single activation ops: a small ONNX MLP with the op, a VNN-LIB property on
disk, ``verify`` as the CLI runs it. The sat threshold lies below the network's maximum on the
box (a validated counterexample must come back), the unsat one a little above it (the op's
relaxation has to prove it)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_import.onnx_util import ort_outputs
from verifier.config import VerifyConfig
from verifier.pipeline import verify

N_IN, HIDDEN = 2, 6
LOW, HIGH = -1.0, 1.0

# label -> (ONNX op type, attributes, opset)
OPS = {
    "Softplus": ("Softplus", {}, 13),
    "Elu": ("Elu", {}, 13),
    "Elu(alpha=2)": ("Elu", {"alpha": 2.0}, 13),  # not convex: a concave kink at 0
}


def _mlp(op: str) -> onnx.ModelProto:
    """x[1, 2] -> Gemm -> op -> Gemm -> y[1, 1], fixed weights."""
    op_type, attrs, opset = OPS[op]
    rng = np.random.default_rng(7)
    inits = {"w1": rng.normal(0, 2, (HIDDEN, N_IN)), "b1": rng.normal(0, 1, HIDDEN),
             "w2": rng.normal(0, 1, (1, HIDDEN)), "b2": np.zeros(1)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node(op_type, ["h"], ["a"], **attrs),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _grid_max(model: onnx.ModelProto, n: int = 201) -> float:
    """The network's maximum over a dense grid of the box (onnxruntime, float32)."""
    axis = np.linspace(LOW, HIGH, n, dtype=np.float32)
    xs = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 1, N_IN)
    outs = ort_outputs(model, [{"x": x} for x in xs])
    return max(float(o[0].ravel()[0]) for o in outs)


def _vnnlib(threshold: float) -> str:
    """Unsafe set: Y_0 >= threshold on the box [LOW, HIGH]^2."""
    lines = [f"(declare-const X_{i} Real)" for i in range(N_IN)] + ["(declare-const Y_0 Real)"]
    for i in range(N_IN):
        lines += [f"(assert (>= X_{i} {LOW}))", f"(assert (<= X_{i} {HIGH}))"]
    lines.append(f"(assert (>= Y_0 {threshold!r}))")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("op", sorted(OPS))
def test_sat_gives_a_validated_counterexample_and_unsat_is_proved(op, tmp_path):
    model = _mlp(op)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    top = _grid_max(model)
    results = {}
    for name, threshold in (("sat", top - 0.05), ("unsat", top + 0.05)):
        prop = tmp_path / f"{name}.vnnlib"
        prop.write_text(_vnnlib(threshold))
        results[name] = verify(str(path), str(prop), VerifyConfig(timeout=30.0))
        assert results[name].verdict == name, (op, threshold, results[name])
    cex = results["sat"].counterexample
    assert cex is not None
    x = np.asarray(cex.x, np.float32).reshape(1, N_IN)
    assert np.all((x >= LOW) & (x <= HIGH)), x
    y = float(ort_outputs(model, [{"x": x}])[0][0].ravel()[0])
    assert y >= top - 0.05, (x, y)
