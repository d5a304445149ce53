"""Graph simplification passes. Each takes a Graph and returns an equivalent, simpler Graph."""

from __future__ import annotations

import numpy as np

from bounds.graph import Graph, Node


def _replace_nodes(graph: Graph, nodes: list[Node], renames: dict[str, str]) -> Graph:
    def rn(name):
        while name in renames:
            name = renames[name]
        return name

    fixed = [
        Node(n.name, n.op, tuple(rn(i) if i is not None else None for i in n.inputs), n.shape,
             n.attrs, n.consts)
        for n in nodes
    ]
    outputs = tuple(type(o)(rn(o.name), o.shape, o.onnx_name, o.layout_note)
                    for o in graph.outputs)
    return Graph(graph.inputs, outputs, tuple(fixed), graph.opset, graph.metadata)


def _single_consumer(graph: Graph, name: str) -> bool:
    is_output = any(o.name == name for o in graph.outputs)
    return not is_output and len(graph.consumers(name)) == 1


def fuse_linear_add(graph: Graph) -> Graph:
    """Linear followed by Add of a constant vector over the last axis -> Linear with that bias."""
    nodes, renames, dropped = [], {}, set()
    by_name = {n.name: n for n in graph.nodes}
    for node in graph.nodes:
        if node.name in dropped:
            continue
        nodes.append(node)
    result = []
    for node in nodes:
        if node.op == "Add" and len(node.consts) == 1:
            dyn = node.dynamic_inputs[0]
            src = by_name.get(dyn)
            const = next(iter(node.consts.values()))
            out = node.shape[-1] if node.shape else 0
            if (src is not None and src.op == "Linear" and _single_consumer(graph, dyn)
                    and const.size == out and const.shape[-1:] == (out,)
                    and src.shape == node.shape):
                bias = src.consts.get(2)
                new_bias = const.reshape(-1).astype(np.float32)
                if bias is not None:
                    new_bias = bias + new_bias
                fused = Node(src.name, "Linear", (src.inputs[0], None, None), src.shape,
                             src.attrs, {1: src.consts[1], 2: new_bias})
                result[result.index(src)] = fused
                renames[node.name] = src.name
                continue
        result.append(node)
    return _replace_nodes(graph, result, renames)


PASSES = (fuse_linear_add,)


def simplify_graph(graph: Graph) -> Graph:
    for simplify in PASSES:
        graph = simplify(graph)
    return graph
