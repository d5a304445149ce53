"""Rewrite one bound network into a model with one flat input and one flat output.

The rewritten model takes the query's free inputs ``z`` (float32 ``[n_z]``) and computes every
declared input tensor from it: a Slice and a Reshape where the tensor's elements are a
contiguous run of ``z`` (the usual case), else a Gather with constant indices (inputs shared
with another tensor or network). Its output ``v`` (float32 ``[n_values]``) is the declared
hidden and output tensors, each flattened row-major, concatenated in declaration order. The
original nodes are kept as they are, so onnxruntime on the rewritten model runs the original
network; the added nodes (Slice, Reshape, Gather, Concat, Cast) are exact.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from verifier.compose.bind import NetworkBinding
from verifier.errors import ModelError
from verifier.onnx_import.loader import opset_of

PREFIX = "nncert_compose"


class Names:
    """Fresh value names that collide with nothing in the model."""

    def __init__(self, graph: onnx.GraphProto, tag: str):
        self.used = {o for n in graph.node for o in n.output}
        self.used.update(t.name for t in graph.initializer)
        self.used.update(vi.name for vi in graph.input)
        self.tag = tag
        self.count = 0

    def __call__(self, what: str) -> str:
        while True:
            self.count += 1
            name = f"{PREFIX}/{self.tag}/{what}_{self.count}"
            if name not in self.used:
                self.used.add(name)
                return name


def constant(names: Names, values, dtype=np.int64) -> tuple[onnx.NodeProto, str]:
    """A Constant node holding ``values`` and the name of its output."""
    out = names("const")
    tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype), out)
    return helper.make_node("Constant", [], [out], value=tensor), out


def take(names: Names, source: str, index: np.ndarray, shape: tuple[int, ...],
         opset: int) -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing ``source[index]`` (source 1-D) shaped as ``shape``."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    start = int(index[0]) if index.size else 0
    nodes: list[onnx.NodeProto] = []
    if np.array_equal(index, np.arange(start, start + index.size)):
        part = names("slice")
        if opset < 10:
            nodes.append(helper.make_node("Slice", [source], [part], starts=[start],
                                          ends=[start + index.size], axes=[0]))
        else:
            made = [constant(names, [v]) for v in (start, start + index.size, 0)]
            nodes += [n for n, _ in made]
            nodes.append(helper.make_node("Slice", [source, *(o for _, o in made)], [part]))
        shape_node, shape_name = constant(names, shape)
        out = names("input")
        nodes += [shape_node, helper.make_node("Reshape", [part, shape_name], [out])]
        return nodes, out
    idx_node, idx_name = constant(names, index.reshape(shape))
    out = names("gather")
    return [idx_node, helper.make_node("Gather", [source, idx_name], [out], axis=0)], out


def flatten_values(names: Names, values: list[tuple[str, int]],
                   out: str) -> list[onnx.NodeProto]:
    """Nodes writing the row-major concatenation of ``values`` ((name, elem type)) to out."""
    shape_node, flat_shape = constant(names, [-1])
    nodes = [shape_node]
    parts = []
    for name, elem_type in values:
        flat = names("flat")
        nodes.append(helper.make_node("Reshape", [name, flat_shape], [flat]))
        if elem_type not in (TensorProto.FLOAT, 0):
            cast = names("cast")
            nodes.append(helper.make_node("Cast", [flat], [cast], to=TensorProto.FLOAT))
            flat = cast
        parts.append(flat)
    nodes.append(helper.make_node("Concat", parts, [out], axis=0))
    return nodes


Z_NAME = f"{PREFIX}/z"


def value_name(network: str) -> str:
    """The name of a rewritten network's flat output."""
    return f"{PREFIX}/{network}/v"


def flat_network(binding: NetworkBinding, input_index: np.ndarray, n_z: int,
                 value_types: list[int]) -> onnx.ModelProto:
    """The network on free inputs ``Z_NAME[n_z]`` with output ``value_name(network)``:
    declared input element ``i`` of this network (``binding.input_offset + i`` overall) is
    ``z[input_index[...]]``; ``value_types`` are the ONNX element types of the declared
    values (0: unknown, float)."""
    model = onnx.ModelProto()
    model.CopyFrom(binding.model)
    graph = model.graph
    opset = opset_of(model)
    names = Names(graph, binding.decl.name)
    z_name, out_name = Z_NAME, value_name(binding.decl.name)
    if z_name in names.used or out_name in names.used:
        raise ModelError(f"the model of network {binding.decl.name} already uses the names "
                         f"{PREFIX}/...; rename its values")
    names.used.update((z_name, out_name))
    bound = {b.onnx_name for b in binding.inputs}
    front: list[onnx.NodeProto] = []
    offset = binding.input_offset
    for b in binding.inputs:
        idx = input_index[offset:offset + b.decl.size]
        offset += b.decl.size
        nodes, made = take(names, z_name, idx, b.shape, opset)
        last = helper.make_node("Identity", [made], [b.onnx_name])
        if b.elem_type == TensorProto.DOUBLE:
            last = helper.make_node("Cast", [made], [b.onnx_name], to=TensorProto.DOUBLE)
        front += [*nodes, last]
    back = flatten_values(names, [(name, t) for (_, name), t in
                                  zip(binding.values, value_types, strict=True)], out_name)
    kept = [vi for vi in graph.input if vi.name not in bound]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(z_name, TensorProto.FLOAT, [n_z]),
                        *kept])
    nodes = [*front, *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
    n_values = sum(d.size for d, _ in binding.values)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [n_values]))
    _drop_value_info(graph, bound)
    return model


def _drop_value_info(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove shape annotations of former graph inputs (now node outputs of our shape)."""
    keep = [vi for vi in graph.value_info if vi.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)
