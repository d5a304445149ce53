"""The form of a graph the bound engines work on: one place for the graph rewrites they need.

Every rewrite keeps the names of the values it does not remove, so bounds, splits and
counterexamples refer to the same values as in the imported graph."""

from __future__ import annotations

from bounds.graph import Graph
from bounds.rules.argmax_pairs import pair_argmax
from bounds.rules.softmax import expand_softmax


def bound_graph(graph: Graph) -> Graph:
    """``graph`` with ArgMax read from score differences (``argmax_pairs``), then Softmax as
    exp / sum / reciprocal (``softmax``); the same object when neither applies. Cached per
    graph by each rewrite."""
    return expand_softmax(pair_argmax(graph))
