"""The computation-graph IR that every engine reads.

It lives in `bounds` (not `verifier`) because the bound engines must read it and `bounds` never
imports `verifier`; the ONNX importer in `verifier.onnx_import` produces it.

Conventions
-----------
* Every IR node has exactly one output (multi-output ONNX ops such as Split become several nodes).
* Shapes are static and *per sample*: the ONNX shape with a symbolic batch dimension set to 1.
  At run time every dynamic tensor carries one extra leading batch axis, so a value of static
  shape ``(1, 5)`` is a tensor of shape ``(B, 1, 5)``. Axis attributes in ``attrs`` always refer
  to the static shape and are non-negative; rules add 1 when they touch the tensor.
* Constant operands (weights, biases, broadcast constants) are stored inline in ``Node.consts``
  keyed by their input position, and the name at that position in ``Node.inputs`` is ``None``.
  Constants carry no batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

Shape = tuple[int, ...]


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, eq=False)
class Node:
    """One IR operation producing the value ``name``."""

    name: str
    op: str
    inputs: tuple[str | None, ...]
    shape: Shape
    attrs: Mapping[str, object] = field(default_factory=dict)
    consts: Mapping[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", _frozen(self.attrs))
        object.__setattr__(self, "consts", _frozen(self.consts))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        for pos in self.consts:
            if self.inputs[pos] is not None:
                raise ValueError(f"node {self.name}: input {pos} is both named and constant")

    @property
    def dynamic_inputs(self) -> tuple[str, ...]:
        """Names of the non-constant inputs, in input order."""
        return tuple(n for n in self.inputs if n is not None)

    def is_const(self, pos: int) -> bool:
        return pos in self.consts


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: its name and static per-sample shape."""

    name: str
    shape: Shape
    onnx_name: str = ""
    layout_note: str = ""


@dataclass(frozen=True, eq=False)
class Graph:
    """A topologically ordered list of nodes with named inputs and outputs."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: tuple[Node, ...]
    opset: int = 0
    metadata: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "metadata", _frozen(self.metadata))
        self._check_topological()

    def _check_topological(self) -> None:
        known = {t.name for t in self.inputs}
        for node in self.nodes:
            for name in node.dynamic_inputs:
                if name not in known:
                    raise ValueError(f"node {node.name} ({node.op}) reads undefined value {name!r}")
            if node.name in known:
                raise ValueError(f"value {node.name!r} is defined twice")
            known.add(node.name)
        for out in self.outputs:
            if out.name not in known:
                raise ValueError(f"graph output {out.name!r} is not produced by any node")

    def shape_of(self, name: str) -> Shape:
        for t in self.inputs:
            if t.name == name:
                return t.shape
        return self.node(name).shape

    def node(self, name: str) -> Node:
        index = self._index()
        if name not in index:
            raise KeyError(name)
        return index[name]

    def _index(self) -> dict[str, Node]:
        cached = self.__dict__.get("_node_index")
        if cached is None:
            cached = {n.name: n for n in self.nodes}
            object.__setattr__(self, "_node_index", cached)
        return cached

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    @property
    def op_types(self) -> list[str]:
        return sorted({n.op for n in self.nodes})

    def parameter_count(self) -> int:
        return int(sum(a.size for n in self.nodes for a in n.consts.values()))


def conv_like(graph: Graph, name: str) -> int:
    """The spatial rank of value ``name`` when some Conv of the graph has its rank (its last
    axes then read as channel, spatial...), else 0."""
    shape = graph.shape_of(name)
    if len(shape) < 3 or not any(n.op == "Conv" and len(n.shape) == len(shape)
                                 for n in graph.nodes):
        return 0
    return len(shape) - 2
