"""Interval bound propagation over the whole graph.

One node's IBP over a large batch of domains (branch and bound on a UNet: 64 domains of a
32x31x47 convolution, three convolutions each for centre, radius and rounding error) took
seconds, and the deadline is only read between nodes: the carvana runs ended 1.3-3.9 s past
their deadline inside one such call. :func:`propagate_node` therefore splits a large batch
into chunks timed by ``deadline.timed_chunks``, which reads the clock before each chunk.
"""

from __future__ import annotations

import functools
import math

import torch

from bounds.engine.constants import node_args
from bounds.engine.deadline import check_deadline, timed_chunks
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
    """``interval`` widened by a rounding allowance. An end at infinity on the inward side
    stays there: a value whose exact lower end is +inf (an Exp of a masked attention score's
    difference, 3.4e38) overflows to +inf in float32 too, while inf - inf would make the end
    NaN (and the masked softmax output [0, 1] instead of 0)."""
    if delta is None:
        return interval
    lower, upper = interval.lower - delta, interval.upper + delta
    lower = torch.where(interval.lower == math.inf, interval.lower, lower)
    upper = torch.where(interval.upper == -math.inf, interval.upper, upper)
    return Interval(lower, upper)


def intersect(a: Interval, b: Interval | None) -> Interval:
    """Both intervals' constraints; a NaN end says nothing (fmax/fmin take the other end: a
    NaN in a given interval made every bound of a ViT NaN)."""
    if b is None:
        return a
    return Interval(torch.fmax(a.lower, b.lower), torch.fmin(a.upper, b.upper))


# A node whose batch holds more output elements than this is bounded in timed chunks of
# domains (below it one call takes milliseconds, and chunking would only add copies).
CHUNK_MIN_ELEMENTS = 1 << 20


def _node_interval(node: Node, rule: OpRule, args: list, in_shape) -> tuple:
    out = node_ibp(node, rule, args)
    delta = rounding_error(node, rule, args, out, in_shape)
    return raise_to_floor(widen(out, delta), rule.floor and rule.floor(node, args)), delta


def raise_to_floor(interval: Interval, floor: torch.Tensor | None) -> Interval:
    """``interval`` with its lower ends raised to ``floor`` (``OpRule.floor``: a bound the
    value meets exactly and in float32, which the symmetric rounding allowance loses)."""
    if floor is None:
        return interval
    return Interval(torch.maximum(interval.lower, floor.to(interval.lower)), interval.upper)


def _batch_of(args: list) -> int:
    sizes = {a.lower.shape[0] for a in args if isinstance(a, Interval)}
    return sizes.pop() if len(sizes) == 1 else 0


def _slice_args(args: list, start: int, stop: int) -> list:
    return [Interval(a.lower[start:stop], a.upper[start:stop]) if isinstance(a, Interval)
            else a for a in args]


def _cat_parts(parts: list) -> tuple:
    """Join chunk results (interval, delta); a delta without the batch axis is shared."""
    out = Interval(torch.cat([p[0].lower for p in parts]), torch.cat([p[0].upper for p in parts]))
    deltas = [p[1] for p in parts]
    if deltas[0] is None:
        return out, None
    if all(d.dim() > 0 and d.shape[0] == s for d, s in
           zip(deltas, (p[0].lower.shape[0] for p in parts), strict=True)):
        return out, torch.cat(deltas)
    return out, functools.reduce(torch.maximum, deltas)


def propagate_node(graph: Graph, node: Node, bounds: dict, device, dtype):
    """Sound interval of ``node`` from the bounds of its inputs, float32 rounding included.

    Returns ``(interval, delta)`` where ``delta`` bounds the node's rounding error (or None).
    A batch of domains holding more than CHUNK_MIN_ELEMENTS output elements is bounded in
    timed chunks of domains (each domain's interval depends on that domain's inputs only),
    with a deadline check before each chunk.
    """
    rule = rules().get(node.op, node.name)
    args = node_args(node, bounds, device, dtype)
    in_shape = graph.shape_of(node.dynamic_inputs[0]) if node.dynamic_inputs else ()
    batch, numel = _batch_of(args), math.prod(node.shape)
    if batch <= 1 or batch * numel <= CHUNK_MIN_ELEMENTS:
        return _node_interval(node, rule, args, in_shape)
    parts = timed_chunks(batch, numel, lambda a, b: _node_interval(
        node, rule, _slice_args(args, a, b), in_shape))
    return parts[0] if len(parts) == 1 else _cat_parts(parts)


def ibp_bounds(graph: Graph, box: Interval, given: dict[str, Interval] | None = None,
               until: str | None = None) -> dict:
    """Intervals of every value for inputs in ``box`` ([B, *input_shape] tensors); with
    ``until``, of the values up to that node only (graph order).

    ``given`` holds extra per-domain constraints on values (e.g. branch-and-bound splits); they
    are intersected in as soon as the value is computed. Raises DeadlineExceeded between
    nodes once the engines' deadline has passed (``bounds.engine.deadline``).
    """
    given = given or {}
    name = graph.inputs[0].name
    shape = graph.inputs[0].shape
    bounds = {name: Interval(box.lower.reshape(-1, *shape), box.upper.reshape(-1, *shape))}
    for node in graph.nodes:
        # (between nodes, as every engine does: a pass over MobileViT's 107 nodes for a
        # batch of domains ran past a run's hard deadline with no check on the way)
        check_deadline()
        out, _ = propagate_node(graph, node, bounds, box.lower.device, box.lower.dtype)
        bounds[node.name] = intersect(out, given.get(node.name))
        if node.name == until:
            break
    return bounds
