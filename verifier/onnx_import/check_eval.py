"""Float64 evaluation of the IR with a float32 rounding enclosure, for the differential check.

``enclose`` evaluates every node at concrete points in float64 and, alongside, propagates the
zero-width box of each point through interval bound propagation with the rounding allowance of
``bounds.engine.rounding`` (the same ``propagate_node`` the bound engines use). The interval of
a value then contains every float32 evaluation of the IR at that point, whatever the summation
order, so its distance from the float64 value is how far float32 arithmetic alone may move it.

``first_divergence`` locates where onnxruntime and the IR part ways: it exposes the ONNX values
that map to IR values (``ImportedModel.value_names``) as extra outputs and compares them in
graph order with the same allowance.
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
from bounds.engine.rounding import U32
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


def enclose(graph: Graph, points: np.ndarray, keep: set[str] = frozenset(),
            stop: float | None = None) -> dict[str, Enclosed]:
    """Float64 values and float32 enclosures of the graph outputs and of the values in
    ``keep`` at ``points``. Raises OutOfTime once ``time.monotonic()`` passes ``stop``."""
    inputs = split_inputs(graph, points)
    values = {t.name: x for t, x in zip(graph.inputs, inputs, strict=True)}
    boxes = {name: Interval(x, x) for name, x in values.items()}
    wanted = keep | {o.name for o in graph.outputs}
    last_use = _last_use(graph)
    registry = rules()
    with torch.no_grad():
        for index, node in enumerate(graph.nodes):
            if stop is not None and time.monotonic() > stop:
                raise OutOfTime(f"stopped before node {node.name!r}")
            rule = registry.get(node.op, node.name)
            values[node.name] = rule.forward(node, node_args(node, values, "cpu", torch.float64))
            boxes[node.name] = _node_interval(graph, node, rule, boxes)
            for name in node.dynamic_inputs:
                if last_use[name] == index and name not in wanted:
                    del values[name], boxes[name]
    return {name: Enclosed(values[name], boxes[name].lower, boxes[name].upper)
            for name in wanted if name in values}


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
        return interval
    except Exception as exc:  # noqa: BLE001 - the check must not die on one rule's interval
        log.debug("check: no interval for %s node %r (%s); using end-point hull",
                  node.op, node.name, exc)
    lows = node_args(node, {k: b.lower for k, b in boxes.items()}, "cpu", torch.float64)
    ups = node_args(node, {k: b.upper for k, b in boxes.items()}, "cpu", torch.float64)
    a, b = rule.forward(node, lows), rule.forward(node, ups)
    lower, upper = torch.minimum(a, b), torch.maximum(a, b)
    delta = 2.0**-19 * torch.maximum(lower.abs(), upper.abs()) + 2.0**-23
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


def first_divergence(model, point: np.ndarray, slack: float, stop: float | None) -> str:
    """Where the IR and onnxruntime first part ways at ``point`` ([1, n_in]): the first IR
    value, in graph order, whose mapped ONNX value lies beyond ``slack`` x its allowance."""
    from verifier.onnx_import.ort import run_ort, session_exposing

    graph = model.graph
    to_onnx = _mapped_values(model)
    if not to_onnx:
        return "no intermediate ONNX value maps to an IR value"
    session = session_exposing(model, list(to_onnx.values()))
    names = [o.name for o in session.get_outputs()]
    refs = dict(zip(names, run_ort(model, point, session=session), strict=True))
    enclosed = enclose(graph, point, keep=set(to_onnx), stop=stop)
    for node in graph.nodes:
        onnx_name = to_onnx.get(node.name)
        if onnx_name is None or refs[onnx_name].size != math.prod(node.shape):
            continue
        ours, allowance = enclosed[node.name].flat()
        ratio = excess(ours, allowance, refs[onnx_name])
        at = int(np.argmax(ratio))
        if ratio.flat[at] > slack:
            return (f"ONNX value {onnx_name!r} (IR node {node.name!r}, {node.op}):"
                    f" |difference| {abs(ours.flat[at] - float(refs[onnx_name].flat[at])):.3g},"
                    f" float32 allowance {allowance.flat[at]:.3g}")
    return "every intermediate ONNX value that maps to an IR value agrees"


def _mapped_values(model) -> dict[str, str]:
    """IR node name -> one ONNX value name of the same tensor (graph inputs excluded)."""
    nodes = {n.name for n in model.graph.nodes}
    out: dict[str, str] = {}
    for onnx_name, ir_name in model.value_names.items():
        if ir_name in nodes:
            out.setdefault(ir_name, onnx_name)
    return out
