"""The differential check passes on a faithful import and refuses a wrong one."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from bounds.graph import Graph, Node
from tests.onnx_import.onnx_util import one_node, rand
from tests.onnx_import.test_benchmarks import unit_box_spec
from verifier.errors import ModelMismatchError
from verifier.onnx_import.check import differential_check, sample_points
from verifier.onnx_import.loader import import_proto
from verifier.onnx_import.ort import ort_session, run_ort


def _model():
    proto = one_node("Gemm", {"x": (1, 4)}, {"w": rand(3, 4), "b": rand(3)}, transB=1)
    data = proto.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def test_faithful_import_passes():
    model = _model()
    assert differential_check(model, unit_box_spec(model)) <= 1e-6


def test_tampered_graph_is_refused():
    model = _model()
    g = model.graph
    node = g.nodes[0]
    consts = dict(node.consts)
    consts[2] = consts[2] + 0.01
    bad = Node(node.name, node.op, node.inputs, node.shape, node.attrs, consts)
    tampered = dataclasses.replace(model, graph=Graph(g.inputs, g.outputs, (bad,), g.opset))
    with pytest.raises(ModelMismatchError, match="relative error .* point"):
        differential_check(tampered, unit_box_spec(tampered))


def test_sample_points_bounded_for_high_dimension():
    rng = np.random.default_rng(0)
    points, kinds = sample_points(np.zeros(100), np.ones(100), rng, 8)
    assert len(points) == len(kinds) <= 30
    assert {"corner", "centre", "random"} == set(kinds)
    points, kinds = sample_points(np.zeros(3), np.ones(3), rng, 2)
    assert kinds.count("corner") == 8


def test_ort_session_is_cached_and_runs():
    model = _model()
    assert ort_session(model) is ort_session(model)
    out = run_ort(model, np.zeros((2, 4)))
    assert out[0].shape == (2, 3)
