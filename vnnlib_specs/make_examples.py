"""Write the small bundled examples: a 2-input ReLU network and three properties.

Run ``python vnnlib_specs/make_examples.py`` to reproduce the committed files byte for byte.

The network computes ``Y_0 = relu(X_0) + relu(X_1)`` and ``Y_1 = |X_0 - X_1|`` (as
``relu(X_0 - X_1) + relu(X_1 - X_0)``). On the box ``[0, 1]^2``:

* ``tiny_unsat.vnnlib``: can ``Y_0 >= 2.5``? No (Y_0 <= 2): the answer is ``unsat``.
* ``tiny_sat.vnnlib``: can ``Y_1 >= 0.9``? Yes, e.g. X = (1, 0): the answer is ``sat``.
* ``tiny_sat_v2.vnnlib``: the same question in VNN-LIB 2.0 syntax (network ``tiny``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent

BOX = ((0.0, 1.0), (0.0, 1.0))


def make_model() -> onnx.ModelProto:
    w1 = np.array([[1, 0], [0, 1], [1, -1], [-1, 1]], dtype=np.float32)
    b1 = np.zeros(4, dtype=np.float32)
    w2 = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    b2 = np.zeros(2, dtype=np.float32)
    inits = [numpy_helper.from_array(a, name) for a, name in
             ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))]
    nodes = [
        helper.make_node("Gemm", ["X", "W1", "B1"], ["H"], name="fc1", transB=1),
        helper.make_node("Relu", ["H"], ["R"], name="relu1"),
        helper.make_node("Gemm", ["R", "W2", "B2"], ["Y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
        inits,
    )
    model = helper.make_model(graph, producer_name="nncert-examples",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def v1_spec(comment: str, output_assert: str) -> str:
    lines = [f"; {comment}", "; Y_0 = relu(X_0) + relu(X_1), Y_1 = |X_0 - X_1|", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(2)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(2)]
    lines.append("")
    for i, (lo, hi) in enumerate(BOX):
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    lines += ["", output_assert, ""]
    return "\n".join(lines)


def v2_spec() -> str:
    lines = [
        "; VNN-LIB 2.0: can |X_0 - X_1| reach 0.9 on [0, 1]^2? (sat)",
        "(vnnlib-version <2.0>)",
        "",
        "(declare-network tiny",
        "    (declare-input X float32 [1,2])",
        "    (declare-output Y float32 [1,2])",
        ")",
        "",
    ]
    for i, (lo, hi) in enumerate(BOX):
        lines.append(f"(assert (and (>= X[0,{i}] {lo}) (<= X[0,{i}] {hi})))")
    lines += ["(assert (>= Y[0,1] 0.9))", ""]
    return "\n".join(lines)


def main() -> None:
    (HERE / "tiny.onnx").write_bytes(make_model().SerializeToString())
    (HERE / "tiny_unsat.vnnlib").write_text(v1_spec(
        "can relu(X_0) + relu(X_1) reach 2.5 on [0, 1]^2? (unsat)", "(assert (>= Y_0 2.5))"))
    (HERE / "tiny_sat.vnnlib").write_text(
        v1_spec("can |X_0 - X_1| reach 0.9 on [0, 1]^2? (sat)", "(assert (>= Y_1 0.9))"))
    (HERE / "tiny_sat_v2.vnnlib").write_text(v2_spec())
    (HERE / "instances.csv").write_text(
        "tiny.onnx,tiny_unsat.vnnlib,10\ntiny.onnx,tiny_sat.vnnlib,10\n")
    (HERE / "expected.csv").write_text(
        "onnx,vnnlib,expected\ntiny.onnx,tiny_unsat.vnnlib,unsat\ntiny.onnx,tiny_sat.vnnlib,sat\n")


if __name__ == "__main__":
    main()
