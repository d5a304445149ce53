"""Interval bound propagation over the whole graph."""

from __future__ import annotations

import torch

from bounds.engine.constants import node_args
from bounds.engine.rounding import rounding_error
from bounds.graph import Graph, Node
from bounds.registry import OpRule, rules
from bounds.types import Interval


def node_ibp(node: Node, rule: OpRule, args: list) -> Interval:
    """IBP of one node from its argument intervals (constants as tensors)."""
    if rule.ibp is not None:
        return rule.ibp(node, args)
    if rule.traits.monotone:
        lows = [a.lower if isinstance(a, Interval) else a for a in args]
        ups = [a.upper if isinstance(a, Interval) else a for a in args]
        return Interval(rule.forward(node, lows), rule.forward(node, ups))
    raise TypeError(f"rule for {node.op} (node {node.name!r}) has neither an ibp function nor"
                    " a monotone trait; the registry's soundness harness should have caught it")


def widen(interval: Interval, delta: torch.Tensor | None) -> Interval:
    if delta is None:
        return interval
    return Interval(interval.lower - delta, interval.upper + delta)


def intersect(a: Interval, b: Interval | None) -> Interval:
    if b is None:
        return a
    return Interval(torch.maximum(a.lower, b.lower), torch.minimum(a.upper, b.upper))


def propagate_node(graph: Graph, node: Node, bounds: dict, device, dtype):
    """Sound interval of ``node`` from the bounds of its inputs, float32 rounding included.

    Returns ``(interval, delta)`` where ``delta`` bounds the node's rounding error (or None).
    """
    rule = rules().get(node.op, node.name)
    args = node_args(node, bounds, device, dtype)
    out = node_ibp(node, rule, args)
    in_shape = graph.shape_of(node.dynamic_inputs[0]) if node.dynamic_inputs else ()
    delta = rounding_error(node, rule, args, out, in_shape)
    return widen(out, delta), delta


def ibp_bounds(graph: Graph, box: Interval, given: dict[str, Interval] | None = None) -> dict:
    """Intervals of every value for inputs in ``box`` ([B, *input_shape] tensors).

    ``given`` holds extra per-domain constraints on values (e.g. branch-and-bound splits); they
    are intersected in as soon as the value is computed.
    """
    given = given or {}
    name = graph.inputs[0].name
    shape = graph.inputs[0].shape
    bounds = {name: Interval(box.lower.reshape(-1, *shape), box.upper.reshape(-1, *shape))}
    for node in graph.nodes:
        out, _ = propagate_node(graph, node, bounds, box.lower.device, box.lower.dtype)
        bounds[node.name] = intersect(out, given.get(node.name))
    return bounds
