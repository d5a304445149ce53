"""Float64 evaluation of the IR with a float32 rounding enclosure, for the differential check.

``enclose`` evaluates every node at concrete points in float64 and, alongside, propagates the
zero-width box of each point through interval bound propagation with the rounding allowance of
``bounds.engine.rounding`` (the same ``propagate_node`` the bound engines use). The interval of
a value then contains every float32 evaluation of the IR at that point, whatever the summation
order, so its distance from the float64 value is how far float32 arithmetic alone may move it.

``enclose`` continues from onnxruntime's value at every compared value (``seeds``), so each
enclosure covers one segment; ``constant_rounding`` adds one rounding of each constant (ours
are float32 roundings of constants the importer folded in float64). ``compared_values`` lists
the IR values compared: the outputs and the intermediate values that map to ONNX values
(``ImportedModel.value_names``), which onnxruntime exposes as extra outputs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bounds.engine.constants import node_args
from bounds.engine.ibp import propagate_node, widen
from bounds.engine.rounding import (
    DOT_OPS,
    U32,
    gamma,
    generic_error,
    reduction_length,
    rounding_error,
)
from bounds.graph import Graph, Node
from bounds.registry import rules
from bounds.types import Interval

log = logging.getLogger(__name__)

F32_MAX = float(np.finfo(np.float32).max)


class OutOfTime(Exception):  # noqa: N818 - reads as the event it reports
    """The check's time limit passed during an evaluation."""


@dataclass(frozen=True)
class Enclosed:
    """Float64 values ``[B, *shape]`` of one IR value and the float32 enclosure around them."""

    value: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """Per point ``[B, size]``: the float64 value and its allowance, the largest distance a
        float32 evaluation may lie from it (plus one float32 rounding of the value itself,
        since onnxruntime returns float32)."""
        v = self.value.reshape(len(self.value), -1)
        lo = self.lower.reshape(v.shape)
        up = self.upper.reshape(v.shape)
        spread = torch.maximum(torch.maximum(v - lo, up - v), torch.zeros_like(v))
        spread = torch.where(torch.isnan(spread), torch.full_like(v, math.inf), spread)
        return v.numpy(), (spread + U32 * v.abs()).numpy()


def split_inputs(graph: Graph, points: np.ndarray) -> list[torch.Tensor]:
    """Flat points ``[B, n_in]`` (inputs concatenated in order) as batched float64 tensors."""
    tensors, start = [], 0
    for info in graph.inputs:
        size = math.prod(info.shape)
        chunk = torch.as_tensor(points[:, start:start + size], dtype=torch.float64)
        tensors.append(chunk.reshape(len(points), *info.shape))
        start += size
    return tensors


def enclose(graph: Graph, points: np.ndarray, seeds: dict[str, np.ndarray] | None = None,
            stop: float | None = None) -> dict[str, Enclosed]:
    """Float64 values and float32 enclosures at ``points`` of the graph outputs and of the
    values in ``seeds``.

    ``seeds`` maps IR values to onnxruntime's values of the same tensors (``[B, size]``): once
    such a value is computed and recorded, its readers see onnxruntime's value instead, as a
    zero-width box. Each recorded value is then our evaluation of one segment of the graph
    from onnxruntime's own inputs, and its allowance covers only that segment's rounding: a
    worst-case enclosure propagated through a whole deep network grows with the product of the
    weight magnitudes (hundreds of times the value on a 9-layer MLP) and would accept anything.
    Raises OutOfTime once ``time.monotonic()`` passes ``stop``.
    """
    seeds = seeds or {}
    inputs = split_inputs(graph, points)
    values = {t.name: x for t, x in zip(graph.inputs, inputs, strict=True)}
    # None: the value is a point (no rounding yet since the last seed); most nodes read points,
    # and a point's enclosure is its value plus the node's own rounding, with no interval pass.
    boxes: dict[str, Interval | None] = dict.fromkeys(values)
    recorded = {o.name for o in graph.outputs} | set(seeds)
    last_use = _last_use(graph)
    registry = rules()
    out: dict[str, Enclosed] = {}
    with torch.no_grad():
        for index, node in enumerate(graph.nodes):
            if stop is not None and time.monotonic() > stop:
                raise OutOfTime(f"stopped before node {node.name!r}")
            rule = registry.get(node.op, node.name)
            value = rule.forward(node, node_args(node, values, "cpu", torch.float64))
            if all(boxes[name] is None for name in node.dynamic_inputs):
                box = _point_interval(graph, node, rule, values, value)
            else:
                box = _node_interval(graph, node, rule, _filled(boxes, values))
            if node.name in recorded:
                out[node.name] = Enclosed(value, *_ends(box, value))
            if node.name in seeds:
                value, box = _as_like(seeds[node.name], value), None
            values[node.name], boxes[node.name] = value, box
            for name in set(node.dynamic_inputs):
                if last_use[name] == index:
                    del values[name], boxes[name]
    return out


def _point_interval(graph: Graph, node: Node, rule, values: dict, value: torch.Tensor):
    """The enclosure of a node whose inputs are points: its value widened by its own rounding
    error bound (None when the op is exact, so the value stays a point)."""
    args = [Interval(a, a) if name is not None else a
            for name, a in zip(node.inputs, node_args(node, values, "cpu", torch.float64),
                               strict=True)]
    in_shape = graph.shape_of(node.dynamic_inputs[0]) if node.dynamic_inputs else ()
    delta = rounding_error(node, rule, args, Interval(value, value), in_shape)
    if node.op in DOT_OPS and node.consts and delta is not None:
        # the dot-product bound is gamma(n+1) |W||x|; the constants' share is U32 |W||x|
        extra = delta * (U32 / gamma(reduction_length(node, in_shape) + 1))
    else:
        extra = constant_rounding(node, rule, args, value)
    delta = _add(delta, extra)
    return None if delta is None else widen(Interval(value, value), delta)


def constant_rounding(node: Node, rule, args: list, value: torch.Tensor):
    """How far the node's value may move because its constants are float32 roundings of what
    the ONNX graph computes in its own way (BatchNormalization folded into Mul + Add, Sub/Div
    or Add folded into weights): one rounding of each constant, U32 |c|, times what it
    multiplies. None for ops that hold no constant."""
    if not node.consts or node.op not in _CONSTANT_OPS:
        return None
    mags = [_magnitude(a) for a in args]
    if node.op in ("Add", "Sub"):
        return U32 * (mags[0] + mags[1])
    if node.op in ("Mul", "Div"):
        return U32 * value.abs()
    return U32 * rule.forward(node, mags)  # (multi)linear with nonnegative structure


_CONSTANT_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Linear", "Conv", "ConvTranspose",
                           "MatMul"})


def _magnitude(arg):
    if arg is None:
        return None
    if isinstance(arg, Interval):
        return torch.maximum(arg.lower.abs(), arg.upper.abs())
    return arg.abs()


def _add(a, b):
    if a is None or b is None:
        return b if a is None else a
    return a + b


def _filled(boxes: dict, values: dict) -> dict:
    """Boxes with points as zero-width intervals (for a node that reads an interval)."""
    return {k: Interval(values[k], values[k]) if b is None else b for k, b in boxes.items()}


def _ends(box: Interval | None, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (value, value) if box is None else (box.lower, box.upper)


def _as_like(seed: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """onnxruntime's value in the shape and dtype of our own value of the same tensor."""
    tensor = torch.as_tensor(np.ascontiguousarray(seed))
    if like.dtype.is_floating_point:
        tensor = tensor.to(torch.float64)
    return tensor.to(like.dtype).reshape(like.shape)


def _last_use(graph: Graph) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.dynamic_inputs:
            last[name] = index
    return last


def _node_interval(graph: Graph, node: Node, rule, boxes: dict) -> Interval:
    """The rounding-widened interval of ``node``; a rule whose interval function fails gets
    the hull of its values at the interval ends, widened by the generic allowance (a heuristic,
    logged: exact for monotone ops, which is what such ops are expected to be)."""
    try:
        interval, _ = propagate_node(graph, node, boxes, "cpu", torch.float64)
        args = node_args(node, boxes, "cpu", torch.float64)
        extra = constant_rounding(node, rule, args, _magnitude(interval))
        return widen(interval, extra)
    except Exception as exc:  # noqa: BLE001 - the check must not die on one rule's interval
        log.debug("check: no interval for %s node %r (%s); using end-point hull",
                  node.op, node.name, exc)
    lows = node_args(node, {k: b.lower for k, b in boxes.items()}, "cpu", torch.float64)
    ups = node_args(node, {k: b.upper for k, b in boxes.items()}, "cpu", torch.float64)
    a, b = rule.forward(node, lows), rule.forward(node, ups)
    lower, upper = torch.minimum(a, b), torch.maximum(a, b)
    delta = generic_error(torch.maximum(lower.abs(), upper.abs()))
    return widen(Interval(lower, upper), delta)


def excess(ours: np.ndarray, allowance: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per element |ours - ref| / allowance (0 where both agree on a non-finite value or
    float32 overflowed where float64 did not; inf where only one side is NaN and the
    allowance is finite)."""
    ref = ref.astype(np.float64).reshape(ours.shape)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(ours - ref)
        ratio = np.where(allowance > 0, diff / allowance, np.where(diff == 0, 0.0, np.inf))
    agree = (np.isnan(ours) & np.isnan(ref)) | (np.isinf(ref) & (ours == ref))
    overflow = np.isinf(ref) & (np.abs(ours) > F32_MAX) & (np.sign(ours) == np.sign(ref))
    unbounded = np.isinf(allowance)
    ratio = np.where(agree | overflow | unbounded, 0.0, ratio)
    return np.where(np.isnan(ratio), np.inf, ratio)


def compared_values(model) -> dict[str, str]:
    """IR value -> one ONNX value name of the same tensor: the graph outputs and every node
    value that survived simplification unchanged (``ImportedModel.value_names``)."""
    nodes = {n.name for n in model.graph.nodes}
    out: dict[str, str] = {}
    for onnx_name, ir_name in model.value_names.items():
        if ir_name in nodes:
            out.setdefault(ir_name, onnx_name)
    for info, onnx_name in zip(model.graph.outputs, model.output_names, strict=True):
        out[info.name] = onnx_name
    return out
