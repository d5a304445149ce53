"""ScatterND at input-dependent indices (converters/scatter.py -> IR ScatterWindow): a patch
written at a position read from the input, built the way exporters write
``t[:, x:x + k, y:y + k] = v`` (Slices of Range values at Cast starts, broadcast into an index
grid through Shape/Expand/Concat), agrees with onnxruntime at every position, clamped windows
included; the forms the importer cannot hold are refused, naming the reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine.forward import run_graph
from tests.onnx_import.onnx_util import ort_outputs
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.loader import import_proto

C, H, W = 3, 5, 4
N_DATA = C * H * W
N_IN = N_DATA + 2
_I64 = np.int64


def _i(v) -> np.ndarray:
    return np.asarray(v, dtype=_I64)


def window_model(k: int = 2, into: str = "mask", updates: str = "const",
                 offset: int = 0, opset: int = 11, reduction: str | None = None
                 ) -> onnx.ModelProto:
    """y = image * mask (``into`` "mask", mask = ScatterND(ones, idx, v)) or ScatterND(image,
    idx, v) (``into`` "image"), the window at (Cast(x[N]), Cast(x[N + 1])) on axes 1 and 2,
    k x k, every column; ``updates`` "const" (v broadcast from [1, 1, 1, W]) or "input" (v read
    from the image); ``offset`` added to the row component after its slice."""
    def n(op, ins, outs, **attrs):
        if op == "Unsqueeze" and opset >= 13:  # axes became an input
            name = f"axes_{outs[0]}"
            inits[name] = _i(attrs.pop("axes"))
            ins = [*ins, name]
        return helper.make_node(op, ins, outs, **attrs)

    inits = {"n0": _i(N_DATA), "n1": _i(N_DATA + 1), "k": _i(k), "shape4": _i([1, C, H, W]),
             "s0": _i([0]), "sN": _i([N_DATA]), "ax1": _i([1]), "ax2": _i([2]), "ax0": _i([0]),
             "rc": _i(np.arange(C)), "rh": _i(np.arange(H)), "rw": _i(np.arange(W)),
             "b0": _i(np.zeros((1, 1, 1, 1))), "re3": _i([-1, 1, 1]), "re2": _i([-1, 1]),
             "ones": np.ones((1, C, H, W), np.float32), "off": _i(offset),
             "v": np.linspace(-1.0, 1.0, W, dtype=np.float32).reshape(1, 1, 1, W)}
    nodes = [
        n("Slice", ["x", "s0", "sN"], ["flat"]), n("Reshape", ["flat", "shape4"], ["image"]),
        n("Gather", ["x", "n0"], ["gx"]), n("Cast", ["gx"], ["px"], to=TensorProto.INT64),
        n("Gather", ["x", "n1"], ["gy"]), n("Cast", ["gy"], ["py"], to=TensorProto.INT64),
        n("Add", ["px", "k"], ["pxk"]), n("Add", ["py", "k"], ["pyk"]),
        n("Unsqueeze", ["px"], ["sx"], axes=[0]), n("Unsqueeze", ["pxk"], ["ex"], axes=[0]),
        n("Unsqueeze", ["py"], ["sy"], axes=[0]), n("Unsqueeze", ["pyk"], ["ey"], axes=[0]),
        n("Slice", ["rc", "sx", "ex", "ax0"], ["wc"]),
        n("Slice", ["rh", "sy", "ey", "ax0"], ["wh0"]),
        n("Add", ["wh0", "off"], ["wh"]),
        n("Reshape", ["wc", "re3"], ["gc"]), n("Reshape", ["wh", "re2"], ["gh"]),
        n("Add", ["b0", "gc"], ["t1"]), n("Add", ["t1", "gh"], ["t2"]),
        n("Add", ["t2", "rw"], ["t3"]), n("Shape", ["t3"], ["grid"]),
    ]
    parts = []
    for name in ("b0", "gc", "gh", "rw"):
        nodes += [n("Expand", [name, "grid"], [f"e_{name}"]),
                  n("Unsqueeze", [f"e_{name}"], [f"u_{name}"], axes=[-1])]
        parts.append(f"u_{name}")
    nodes.append(n("Concat", parts, ["idx"], axis=-1))
    if updates == "const":
        nodes.append(n("Expand", ["v", "grid"], ["upd"]))
    else:  # the image's first rows, as many as the window has: updates depend on the input
        nodes += [n("Slice", ["image", "sx", "ex", "ax1"], ["i1"]),
                  n("Slice", ["i1", "sy", "ey", "ax2"], ["upd"])]
    target = "ones" if into == "mask" else "image"
    extra = {} if reduction is None else {"reduction": reduction}
    nodes.append(n("ScatterND", [target, "idx", "upd"], ["written"], name="paste", **extra))
    if into == "mask":
        nodes.append(n("Mul", ["image", "written"], ["y4"]))
    else:
        nodes.append(n("Identity", ["written"], ["y4"]))
    nodes.append(n("Flatten", ["y4"], ["y"], axis=0))
    graph = helper.make_graph(
        nodes, "window", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, name) for name, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def load(model: onnx.ModelProto):
    data = model.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def positions() -> list[tuple[float, float]]:
    """Every start from 0 to past the end on both axes (windows clamped or empty), with
    fractional parts (the model truncates)."""
    return [(x + f, y + g) for x in range(C + 2) for y in range(H + 2)
            for f, g in ((0.0, 0.0), (0.7, 0.25))]


def _points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pos = np.asarray(positions())
    pts = rng.uniform(-2.0, 2.0, (len(pos), N_IN))
    pts[:, N_DATA:] = pos
    return pts.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("into", ["mask", "image"])
def test_agrees_with_onnxruntime_at_every_position(k, into):
    model = window_model(k, into)
    imported = load(model)
    assert "ScatterWindow" in imported.graph.op_types
    assert "DynamicSlice" not in imported.graph.op_types
    pts = _points(k)
    ref = np.stack([out[0].reshape(-1) for out in
                    ort_outputs(model, [{"x": p.astype(np.float32)} for p in pts])])
    ours = run_graph(imported.graph, torch.tensor(pts))[0].reshape(len(pts), -1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_opset_16_and_18_import():
    for opset in (16, 18):
        assert "ScatterWindow" in load(window_model(2, opset=opset)).graph.op_types


@pytest.mark.parametrize(("kw", "reason"), [
    ({"updates": "input"}, "indices and updates both depend on the input"),
    ({"offset": 1}, "adds an offset after the slice"),
    ({"opset": 16, "reduction": "add"}, "reduction 'add'"),
])
def test_forms_it_cannot_hold_are_refused(kw, reason):
    with pytest.raises(UnsupportedOpError, match=reason) as err:
        load(window_model(2, **kw))
    assert err.value.op == "ScatterND"


def _scalar_tail_model() -> onnx.ModelProto:
    """cctsdb's tail in small: scalars read from a vector (Gather at a scalar index), then
    Sub, Relu, Mul, Div of scalars (an IoU-like ratio), a scalar output."""
    n = helper.make_node
    inits = {f"i{j}": _i(j) for j in range(4)}
    inits["one"] = np.asarray(1.0, np.float32)
    nodes = [n("Gather", ["x", f"i{j}"], [f"g{j}"]) for j in range(4)]
    nodes += [n("Sub", ["g0", "g1"], ["d"]), n("Relu", ["d"], ["r"]),
              n("Mul", ["r", "g2"], ["m"]), n("Relu", ["g3"], ["r3"]),
              n("Add", ["r3", "one"], ["den"]), n("Div", ["m", "den"], ["y"])]
    graph = helper.make_graph(
        nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_scalar_values_are_held_as_one_element_vectors(method):
    """ONNX scalars computed from the input are IR values of shape (1,) (the engines index
    every value along one axis); values agree with onnxruntime and CROWN encloses them."""
    from bounds.engine.spec_bounds import BoundOptions, bound_spec
    from bounds.types import Interval

    model = _scalar_tail_model()
    graph = load(model).graph
    assert all(len(node.shape) >= 1 for node in graph.nodes)
    rng = np.random.default_rng(2)
    lo = rng.uniform(-1.0, 1.0, (3, 4))
    hi = lo + rng.uniform(0.0, 1.0, (3, 4))
    pts = lo + rng.uniform(size=(32, 3, 4)) * (hi - lo)
    ref = np.asarray([out[0] for out in ort_outputs(
        model, [{"x": p.astype(np.float32)} for p in pts.reshape(-1, 4)])]).reshape(32, 3)
    ours = np.stack([run_graph(graph, torch.tensor(p))[0].reshape(3).numpy() for p in pts])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    box = Interval(torch.tensor(lo), torch.tensor(hi))
    coef = torch.ones((3, 1, 1), dtype=torch.float64)
    res = bound_spec(graph, box, coef, torch.zeros((1, 1), dtype=torch.float64),
                     BoundOptions(method=method, intermediate="crown", alpha_iterations=5))
    assert (res.lower.reshape(3) <= torch.tensor(ours.min(0)) + 1e-6).all()
