"""One flat input and one flat output for models with several of either.

VNN-LIB numbers a model's inputs X_0.. and outputs Y_0.. over all its input (output) tensors,
flattened and concatenated in the model's order; the bound engines, MILP and the searches take
one input tensor and bound one output tensor. ``flat_io`` gives such a model's graph that
form: the new input is the concatenation (each original input, named as before, is a Gather
of its positions), the new output the concatenation of the flattened outputs. The values are
the same numbers, moved: bounds, relaxations and rounding allowances are unchanged. Models
with one input and one output keep their graph.

``read``: the flat output positions the spec reads. An output tensor none of whose positions
it reads (a classifier's probabilities beside the label a spec is about) gets zeros in the
concatenation instead, and the nodes that only fed it go: the stages then neither bound nor
encode it, and its ops need no bound rule. Counterexamples are checked on the model itself.
"""

from __future__ import annotations

import math

import numpy as np

from bounds.graph import Graph, Node, TensorInfo

FLAT_INPUT = "nncert/flat_input"
FLAT_OUTPUT = "nncert/flat_output"


def flat_io(graph: Graph, read: np.ndarray | None = None) -> Graph:
    if len(graph.inputs) == 1 and len(graph.outputs) == 1:
        return graph
    if read is not None and not np.any(read):  # (a spec of the inputs alone: keep a graph)
        read = None
    sizes = [math.prod(t.shape) for t in graph.inputs]
    nodes: list[Node] = []
    offset = 0
    for info, size in zip(graph.inputs, sizes, strict=True):
        positions = np.arange(offset, offset + size, dtype=np.int64).reshape(info.shape)
        nodes.append(Node(info.name, "Gather", (FLAT_INPUT, None), info.shape, {"axis": 0},
                          {1: positions}))
        offset += size
    nodes.extend(graph.nodes)
    parts, consts, start = [], {}, 0
    for k, info in enumerate(graph.outputs):
        size = math.prod(info.shape)
        if read is not None and not np.any(read[start:start + size]):
            parts.append(None)
            consts[k] = np.zeros(size, dtype=np.float32)
        else:
            flat = f"{FLAT_OUTPUT}/{k}"
            nodes.append(Node(flat, "Reshape", (info.name,), (size,)))
            parts.append(flat)
        start += size
    nodes.append(Node(FLAT_OUTPUT, "Concat", tuple(parts), (start,), {"axis": 0}, consts))
    return Graph((TensorInfo(FLAT_INPUT, (offset,)),), (TensorInfo(FLAT_OUTPUT, (start,)),),
                 tuple(_feeding(nodes, FLAT_OUTPUT)), opset=graph.opset)


def _feeding(nodes: list[Node], output: str) -> list[Node]:
    """The nodes ``output`` depends on, in their order."""
    needed, kept = {output}, []
    for node in reversed(nodes):
        if node.name in needed:
            kept.append(node)
            needed.update(node.dynamic_inputs)
    return kept[::-1]
