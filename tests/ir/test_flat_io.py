"""Models with several inputs and outputs: one flat input and output for the stages
(``verifier.ir.flat_io``), in VNN-LIB's numbering."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper

from bounds.engine.forward import run_graph
from tests.onnx_import.onnx_util import make_model, ort_outputs, rand
from verifier.config import VerifyConfig
from verifier.ir.flat_io import flat_io
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify
from verifier.spec.types import InputRegion, OutputCondition, Spec


def _two_by_two():
    """Inputs a [1, 3] and b [2, 2]; outputs y1 [1, 2] and y2 = sigmoid(y1)."""
    nodes = [helper.make_node("MatMul", ["a", "w1"], ["h1"]),
             helper.make_node("Reshape", ["b", "flat"], ["bf"]),
             helper.make_node("MatMul", ["bf", "w2"], ["h2"]),
             helper.make_node("Add", ["h1", "h2"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w3"], ["y1"]),
             helper.make_node("Sigmoid", ["y1"], ["y2"])]
    inits = {"w1": rand(3, 8, seed=1) * 2, "w2": rand(4, 8, seed=2) * 2,
             "w3": rand(8, 2, seed=3) * 2, "flat": np.array([1, 4], np.int64)}
    proto = make_model(nodes, {"a": (1, 3), "b": (2, 2)}, ["y1", "y2"], inits)
    data = proto.SerializeToString()
    return proto, import_proto(onnx.load_model_from_string(data), data)


def test_flat_graph_computes_the_concatenated_outputs():
    proto, model = _two_by_two()
    flat = flat_io(model.graph)
    assert [t.shape for t in flat.inputs] == [(7,)] and [t.shape for t in flat.outputs] == [(4,)]
    x = np.random.default_rng(0).uniform(-1, 1, (5, 7)).astype(np.float32)
    (ours,) = run_graph(flat, torch.from_numpy(x))
    refs = ort_outputs(proto, [{"a": p[:3].reshape(1, 3), "b": p[3:].reshape(2, 2)} for p in x])
    expected = np.stack([np.concatenate([r[0].ravel(), r[1].ravel()]) for r in refs])
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_one_input_one_output_keeps_its_graph():
    from tests.onnx_import.onnx_util import one_node

    data = one_node("Relu", {"x": (1, 4)}).SerializeToString()
    model = import_proto(onnx.load_model_from_string(data), data)
    assert flat_io(model.graph) is model.graph


def _spec(threshold: float) -> Spec:
    """Unsafe: Y_3 (y2[0, 1]) >= threshold over X in [-0.1, 0.1]^7."""
    coef = np.zeros((1, 1, 4))
    coef[0, 0, 3] = -1.0
    region = InputRegion(np.full(7, -0.1), np.full(7, 0.1),
                         OutputCondition(coef, np.array([[-threshold]])))
    return Spec((region,), 7, 4)


def test_verify_bounds_and_attacks_a_two_input_two_output_model():
    proto, model = _two_by_two()
    rng = np.random.default_rng(1)
    xs = rng.uniform(-0.1, 0.1, (2000, 7)).astype(np.float32)
    outs = ort_outputs(proto, [{"a": p[:3].reshape(1, 3), "b": p[3:].reshape(2, 2)} for p in xs])
    top = max(float(o[1][0, 1]) for o in outs)
    proved = verify(model, _spec(min(0.999, top + 0.2)), VerifyConfig(timeout=20.0))
    assert proved.verdict == "unsat", proved
    assert "internal_error" not in proved.stats, proved
    found = verify(model, _spec(top - 0.01), VerifyConfig(timeout=20.0))
    assert found.verdict == "sat", found


def test_an_output_the_spec_does_not_read_is_left_out():
    """Reading only y2 (Y_2, Y_3): y1's part of the concatenation is zeros, the values read
    are unchanged; reading nothing of y2 drops its Sigmoid from the graph."""
    proto, model = _two_by_two()
    x = np.random.default_rng(2).uniform(-1, 1, (5, 7)).astype(np.float32)
    (full,) = run_graph(flat_io(model.graph), torch.from_numpy(x))
    y2_only = flat_io(model.graph, np.array([False, False, True, True]))
    (part,) = run_graph(y2_only, torch.from_numpy(x))
    np.testing.assert_array_equal(part[:, :2].numpy(), 0.0)
    np.testing.assert_array_equal(part[:, 2:].numpy(), full[:, 2:].numpy())
    y1_only = flat_io(model.graph, np.array([True, False, False, False]))
    assert "Sigmoid" not in {n.op for n in y1_only.nodes}
    (part,) = run_graph(y1_only, torch.from_numpy(x))
    np.testing.assert_array_equal(part[:, :2].numpy(), full[:, :2].numpy())
    assert Spec((_spec(0.5).regions[0],), 7, 4).read_outputs().tolist() == [False, False, False,
                                                                           True]
    # a spec that reads no output keeps the whole graph (its output then depends on x)
    kept = flat_io(model.graph, np.zeros(4, dtype=bool))
    assert [n.name for n in kept.nodes] == [n.name for n in flat_io(model.graph).nodes]


def test_a_spec_that_reads_no_output_is_decided(tmp_path):
    """Y_1 >= Y_1 holds everywhere: sat at any point of the box (was an internal error when
    every output was left out)."""
    proto, model = _two_by_two()
    coef = np.zeros((1, 1, 4))
    region = InputRegion(np.full(7, -0.1), np.full(7, 0.1), OutputCondition(coef, np.zeros((1, 1))))
    result = verify(model, Spec((region,), 7, 4), VerifyConfig(timeout=20.0))
    assert result.verdict == "sat", result
