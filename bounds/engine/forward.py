"""Concrete batched evaluation of a graph with torch."""

from __future__ import annotations

import torch

from bounds.engine.constants import node_args
from bounds.graph import Graph
from bounds.registry import rules


def run_graph(graph: Graph, *inputs: torch.Tensor, keep_all: bool = False,
              surrogate: bool = False):
    """Evaluate ``graph`` on batched inputs ``[B, *shape]`` (one per graph input, in order).

    Returns the tuple of outputs, or the dict of every value when ``keep_all``. With
    ``surrogate`` the ops that have one take their rule's ``surrogate`` forward: the same
    values, with straight-through gradients across steps (for descent, not for bounds).
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    device, dtype = inputs[0].device, inputs[0].dtype
    values: dict[str, torch.Tensor] = {}
    for info, x in zip(graph.inputs, inputs, strict=True):
        values[info.name] = x.reshape(x.shape[0], *info.shape)
    registry = rules()
    for node in graph.nodes:
        rule = registry.get(node.op, node.name)
        forward = rule.surrogate if surrogate and rule.surrogate is not None else rule.forward
        values[node.name] = forward(node, node_args(node, values, device, dtype))
    if keep_all:
        return values
    return tuple(values[o.name] for o in graph.outputs)
