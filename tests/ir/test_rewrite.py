"""The Rewriter's bookkeeping (``verifier/ir/rewrite.py``): order keys, readers by value and
renames agree with a plain list-scanning reference after random edits, and the graph it
freezes stays in topological order."""

from __future__ import annotations

import random

import pytest

from bounds.graph import Graph, Node, TensorInfo
from verifier.ir.rewrite import Rewriter


def _chain(n: int) -> Graph:
    """x -> n0 -> n1 -> ... with every node also reading the one two back (two readers)."""
    nodes = []
    for i in range(n):
        inputs = (f"n{i - 1}" if i else "x",) + ((f"n{i - 2}",) if i >= 2 else ())
        nodes.append(Node(f"n{i}", "Add" if len(inputs) == 2 else "Relu", inputs, (1, 4)))
    return Graph((TensorInfo("x", (1, 4)),), (TensorInfo(f"n{n - 1}", (1, 4)),), tuple(nodes))


def _topological(graph: Graph) -> bool:
    seen = {t.name for t in graph.inputs}
    for node in graph.nodes:
        if any(x is not None and x not in seen for x in node.inputs):
            return False
        seen.add(node.name)
    return True


@pytest.mark.parametrize("seed", range(5))
def test_random_edits_keep_order_and_readers(seed):
    rng = random.Random(seed)
    rw = Rewriter(_chain(40))
    fresh = 0
    for _ in range(60):
        nodes = list(rw.iter())
        node = rng.choice(nodes[1:-1])
        action = rng.random()
        if action < 0.5:  # replace, with new nodes inserted before it that read its inputs
            before = []
            for _ in range(rng.randrange(3)):
                fresh += 1
                before.append(Node(f"b{fresh}", "Relu", (node.inputs[0],), node.shape))
            fresh += 1
            inputs = (before[-1].name,) if before else node.inputs[:1]
            rw.replace(node, Node(f"r{fresh}", "Relu", inputs, node.shape), before)
        else:  # alias: its readers read its first input instead
            rw.alias(node, node.inputs[0])
        graph = rw.graph()
        assert _topological(graph)
        order = [n.name for n in graph.nodes]
        for value in {x for n in graph.nodes for x in n.inputs}:
            scanned = [n for n in graph.nodes if value in n.inputs]
            assert rw.consumers(value) == scanned
            assert rw.single_use(value) == (len(scanned) == 1 and
                                            value not in [o.name for o in graph.outputs])
        assert [n.name for n in rw.iter()] == order


def test_an_output_renamed_by_a_replacement_follows_it():
    rw = Rewriter(_chain(3))
    last = rw.get("n2")
    rw.replace(last, Node("out", "Relu", ("n1",), last.shape))
    graph = rw.graph()
    assert graph.outputs[0].name == "out"
    assert [n.name for n in graph.nodes] == ["n0", "n1", "out"]
