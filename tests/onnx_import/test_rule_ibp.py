"""IBP of the imported one-node models encloses the forward values at sampled points."""

from __future__ import annotations

import onnx
import pytest
import torch

from bounds.engine.constants import node_args
from bounds.engine.forward import run_graph
from bounds.registry import rules
from bounds.types import Interval
from tests.onnx_import.test_converters import CASES
from verifier.onnx_import.loader import import_proto

HALF_WIDTH = 0.3
# The normalisations' variance (mean(x^2) - mean^2, as onnxruntime computes it) keeps the
# positive lower bound 1 / sqrt needs only on narrow boxes; wider ones raise DomainError.
NARROW = {"layernorm_axis1_stats": 0.01, "instancenorm_1d": 0.01}


def _ibp(graph, boxes: list[Interval]) -> list[Interval]:
    values = {info.name: box for info, box in zip(graph.inputs, boxes, strict=True)}
    device, dtype = boxes[0].lower.device, boxes[0].lower.dtype
    for node in graph.nodes:
        args = node_args(node, values, device, dtype)
        values[node.name] = rules().get(node.op).ibp(node, args)
    return [values[o.name] for o in graph.outputs]


def _box(shape, gen, first: bool, half: float = HALF_WIDTH) -> Interval:
    """centre in [-1, 1] +- HALF_WIDTH; the boxes of later inputs keep |centre| >= 0.5, away
    from zero, so that a dynamic divisor (div_two_dyn) gets a finite bound worth checking."""
    u = torch.rand((1, *shape), generator=gen, dtype=torch.float64)
    if first:
        return Interval(u * 2 - 1 - half, u * 2 - 1 + half)
    sign = torch.where(torch.rand((1, *shape), generator=gen) < 0.5, -1.0, 1.0).double()
    centre = sign * (0.5 + 0.5 * u)
    return Interval(centre - half, centre + half)


@pytest.mark.parametrize("name", sorted(CASES))
def test_ibp_encloses_samples(name):
    proto = CASES[name]()
    data = proto.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    missing = sorted({op for op in graph.op_types if op not in rules()})
    assert not missing, f"{name}: imported ops without a rule: {missing}"
    gen = torch.Generator().manual_seed(0)
    half = NARROW.get(name, HALF_WIDTH)
    boxes = [_box(info.shape, gen, i == 0, half) for i, info in enumerate(graph.inputs)]
    bounds = _ibp(graph, boxes)
    points = [box.lower + torch.rand((64, *info.shape), generator=gen, dtype=torch.float64)
              * (2 * half) for box, info in zip(boxes, graph.inputs, strict=True)]
    for out, b in zip(run_graph(graph, *points), bounds, strict=True):
        assert torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all(), name
        assert torch.all(out >= b.lower - 1e-9) and torch.all(out <= b.upper + 1e-9), name
