"""A small mutable workspace for graph passes: replace, remove and alias nodes by name, then
freeze the result into a new Graph (the IR itself stays immutable)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bounds.graph import Graph, Node, TensorInfo


def feature_vector(const: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """The per-feature vector of ``const`` broadcast to ``shape``, if it varies only along
    ``axis``; None otherwise."""
    try:
        full = np.broadcast_to(np.asarray(const, dtype=np.float64), shape)
    except ValueError:
        return None
    moved = np.moveaxis(full, axis, -1).reshape(-1, shape[axis])
    if not np.all(moved == moved[:1]):
        return None
    return moved[0].copy()


class Rewriter:
    """Nodes by name in topological order, with renames applied to every later reader."""

    def __init__(self, graph: Graph):
        self._graph = graph
        self.nodes: list[Node] = list(graph.nodes)
        # (lookups by name, kept in step with ``nodes``: a scan per lookup made the passes
        # quadratic in the node count, 9 s on a Loop unrolled to 8000 nodes)
        self._by_name: dict[str, Node] = {n.name: n for n in self.nodes}
        self._outputs = [o.name for o in graph.outputs]
        self._input_shapes = {t.name: t.shape for t in graph.inputs}

    def iter(self) -> Iterator[Node]:
        """Current nodes, robust to rewrites made while iterating."""
        for name in [n.name for n in self.nodes]:
            node = self.get(name)
            if node is not None:
                yield node

    def get(self, name: str) -> Node | None:
        return self._by_name.get(name)

    producer = get

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self._input_shapes:
            return self._input_shapes[name]
        return self.get(name).shape

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def single_use(self, name: str) -> bool:
        return name not in self._outputs and len(self.consumers(name)) == 1

    def only_consumer(self, name: str) -> Node | None:
        users = self.consumers(name)
        return users[0] if len(users) == 1 and name not in self._outputs else None

    def replace(self, old: Node, new: Node, before: list[Node] = ()) -> None:
        i = self._position(old.name)
        self.nodes[i:i + 1] = [*before, new]
        del self._by_name[old.name]
        self._by_name.update((n.name, n) for n in (*before, new))
        if new.name != old.name:
            self._rename(old.name, new.name)

    def remove(self, node: Node) -> None:
        del self.nodes[self._position(node.name)]
        del self._by_name[node.name]

    def alias(self, node: Node, target: str) -> None:
        """Drop ``node``; its readers (and graph outputs) read ``target`` instead."""
        self.remove(node)
        self._rename(node.name, target)

    def _position(self, name: str) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.name == name)

    def _rename(self, old: str, new: str) -> None:
        for i, n in enumerate(self.nodes):
            if old in n.inputs:
                inputs = tuple(new if x == old else x for x in n.inputs)
                self.nodes[i] = Node(n.name, n.op, inputs, n.shape, n.attrs, n.consts)
                self._by_name[n.name] = self.nodes[i]
        self._outputs = [new if o == old else o for o in self._outputs]

    def graph(self) -> Graph:
        g = self._graph
        outputs = tuple(TensorInfo(name, o.shape, o.onnx_name, o.layout_note)
                        for name, o in zip(self._outputs, g.outputs, strict=True))
        return Graph(g.inputs, outputs, tuple(self.nodes), g.opset, g.metadata)
