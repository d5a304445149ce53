"""One flat input and one flat output for models with several of either.

VNN-LIB numbers a model's inputs X_0.. and outputs Y_0.. over all its input (output) tensors,
flattened and concatenated in the model's order; the bound engines, MILP and the searches take
one input tensor and bound one output tensor. ``flat_io`` gives such a model's graph that
form: the new input is the concatenation (each original input, named as before, is a Gather
of its positions), the new output the concatenation of the flattened outputs. The values are
the same numbers, moved: bounds, relaxations and rounding allowances are unchanged. Models
with one input and one output keep their graph.
"""

from __future__ import annotations

import math

import numpy as np

from bounds.graph import Graph, Node, TensorInfo

FLAT_INPUT = "nncert/flat_input"
FLAT_OUTPUT = "nncert/flat_output"


def flat_io(graph: Graph) -> Graph:
    if len(graph.inputs) == 1 and len(graph.outputs) == 1:
        return graph
    sizes = [math.prod(t.shape) for t in graph.inputs]
    nodes: list[Node] = []
    offset = 0
    for info, size in zip(graph.inputs, sizes, strict=True):
        positions = np.arange(offset, offset + size, dtype=np.int64).reshape(info.shape)
        nodes.append(Node(info.name, "Gather", (FLAT_INPUT, None), info.shape, {"axis": 0},
                          {1: positions}))
        offset += size
    nodes.extend(graph.nodes)
    parts = []
    for k, info in enumerate(graph.outputs):
        flat = f"{FLAT_OUTPUT}/{k}"
        nodes.append(Node(flat, "Reshape", (info.name,), (math.prod(info.shape),)))
        parts.append(flat)
    total = sum(math.prod(t.shape) for t in graph.outputs)
    nodes.append(Node(FLAT_OUTPUT, "Concat", tuple(parts), (total,), {"axis": 0}))
    return Graph((TensorInfo(FLAT_INPUT, (offset,)),), (TensorInfo(FLAT_OUTPUT, (total,)),),
                 tuple(nodes), opset=graph.opset)
