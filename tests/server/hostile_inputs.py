"""Small uploads that ask for a lot of work at intake (issue 19 item 4), built with
onnx.helper: a model of under 200 bytes whose constant folding builds a 150M-element tensor,
and a ~150 KB spec whose 16 'or's multiply out to 65,536 input boxes of 1,500 inputs.

``python -m tests.server.hostile_inputs DIR`` writes them (with the spec's model) to DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

BOMB_ELEMENTS = 150_000_000
WIDE_INPUTS = 1_500
WIDE_ORS = 16


def folding_bomb_model(elements: int = BOMB_ELEMENTS) -> bytes:
    """Y = X + sum(ConstantOfShape([elements])): the whole constant folds at import."""
    shape = helper.make_tensor("s", TensorProto.INT64, [1], [elements])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("ConstantOfShape", ["s"], ["c"]),
             helper.make_node("ReduceSum", ["c"], ["r"]),
             helper.make_node("Add", ["X", "r"], ["Y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def sum_model(n_inputs: int = WIDE_INPUTS) -> bytes:
    """Y = sum of the inputs (a [1, n] x [n, 1] MatMul)."""
    weight = numpy_helper.from_array(np.ones((n_inputs, 1), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "sum",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n_inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def wide_disjunction_spec(n_inputs: int = WIDE_INPUTS, ors: int = WIDE_ORS) -> str:
    """Every input in [0, 1], and for each of the first ``ors`` inputs an 'or' of its lower
    and its upper half: 2^ors input boxes once multiplied out."""
    lines = [f"(declare-const X_{i} Real)" for i in range(n_inputs)]
    lines.append("(declare-const Y_0 Real)")
    for i in range(n_inputs):
        lines.append(f"(assert (>= X_{i} {0:.12f}))")  # long decimals, as exporters write
        lines.append(f"(assert (<= X_{i} {1:.12f}))")
    for i in range(ors):
        lines.append(f"(assert (or (<= X_{i} 0.5) (>= X_{i} 0.5)))")
    lines.append(f"(assert (>= Y_0 {n_inputs + 1}.0))")
    return "\n".join(lines) + "\n"


def empty_box_spec() -> str:
    """A box whose X_0 lower bound (2) is above its upper bound (1), for the tiny model."""
    return ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
            "(assert (>= X_0 2.0))\n(assert (<= X_0 1.0))\n"
            "(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n(assert (>= Y_0 3.0))\n")


def write_all(folder: Path) -> list[Path]:
    """Write the inputs to ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"folding_bomb.onnx": folding_bomb_model(), "sum_1500.onnx": sum_model(),
             "wide_disjunction.vnnlib": wide_disjunction_spec().encode()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_inputs")):
        print(path, path.stat().st_size)
