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


def _ibp(graph, box: Interval) -> list[Interval]:
    values = {graph.inputs[0].name: box}
    for node in graph.nodes:
        args = node_args(node, values, box.lower.device, box.lower.dtype)
        values[node.name] = rules().get(node.op).ibp(node, args)
    return [values[o.name] for o in graph.outputs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ibp_encloses_samples(name):
    proto = CASES[name]()
    data = proto.SerializeToString()
    graph = import_proto(onnx.load_model_from_string(data), data).graph
    if len(graph.inputs) != 1 or any(op not in rules() for op in graph.op_types):
        pytest.skip("single-input graphs with all rules only")
    gen = torch.Generator().manual_seed(0)
    shape = graph.inputs[0].shape
    center = torch.rand((1, *shape), generator=gen, dtype=torch.float64) * 2 - 1
    box = Interval(center - 0.3, center + 0.3)
    bounds = _ibp(graph, box)
    points = box.lower + torch.rand((64, *shape), generator=gen, dtype=torch.float64) * 0.6
    for out, b in zip(run_graph(graph, points), bounds, strict=True):
        assert torch.all(out >= b.lower - 1e-9) and torch.all(out <= b.upper + 1e-9), name
