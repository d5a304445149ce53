"""Slice at input-dependent starts (IR DynamicSlice): the importer against onnxruntime, the
refusals, and the real cctsdb_yolo_2023 models (their Slices import)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bounds.engine.forward import run_graph
from tests.onnx_import.onnx_util import ort_outputs
from verifier.errors import UnsupportedOpError
from verifier.onnx_import.loader import import_proto, load_model

DATA_SHAPE = (3, 4, 5)
N_DATA = 60
N_IN = N_DATA + 2  # the data, then one start per sliced axis (axes 1 and 2)


def patch_model(lengths=(2, 3), const_data: np.ndarray | None = None, joint: bool = False,
                steps=None, ends_from: str = "starts") -> onnx.ModelProto:
    """x [62]: data = x[:60] as [3, 4, 5] (or ``const_data``), starts of axes 1 and 2 are
    int64(x[60]), int64(x[61]). ``joint``: one Slice over both axes with ends = starts +
    lengths; else one Slice per axis (as torch exports ``t[:, s:s + k]``), ends = s + k.
    ``ends_from="other"``: ends = the other start + k (not a constant length)."""
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.int64), n) for n, v in (
        ("c0", [0]), ("c60", [N_DATA]), ("shape", DATA_SHAPE), ("i60", N_DATA),
        ("i61", N_DATA + 1), ("k0", lengths[0]), ("k1", lengths[1]), ("ax0", [0]),
        ("ax1", [1]), ("ax2", [2]), ("ax12", [1, 2]), ("k01", list(lengths)))]
    nodes = []
    if const_data is None:
        nodes += [helper.make_node("Slice", ["x", "c0", "c60"], ["flat"]),
                  helper.make_node("Reshape", ["flat", "shape"], ["data"])]
    else:
        inits.append(numpy_helper.from_array(const_data.astype(np.float32), "data"))
    for i in range(2):
        nodes += [helper.make_node("Gather", ["x", f"i6{i}"], [f"g{i}"], axis=0),
                  helper.make_node("Cast", [f"g{i}"], [f"s{i}"], to=TensorProto.INT64),
                  helper.make_node("Unsqueeze", [f"s{i}", "ax0"], [f"su{i}"])]
    for i in range(2):
        base = f"s{i}" if ends_from == "starts" else f"s{1 - i}"
        nodes += [helper.make_node("Add", [base, f"k{i}"], [f"e{i}"]),
                  helper.make_node("Unsqueeze", [f"e{i}", "ax0"], [f"eu{i}"])]
    step_inputs = []
    if steps is not None:
        inits.append(numpy_helper.from_array(np.asarray(steps, dtype=np.int64), "steps"))
        step_inputs = ["steps"]
    if joint:
        nodes += [helper.make_node("Concat", ["su0", "su1"], ["st"], axis=0),
                  helper.make_node("Add", ["st", "k01"], ["en"]),
                  helper.make_node("Slice", ["data", "st", "en", "ax12", *step_inputs], ["y"])]
    else:
        nodes += [helper.make_node("Slice", ["data", "su0", "eu0", "ax1", *step_inputs],
                                   ["mid"]),
                  helper.make_node("Slice", ["mid", "su1", "eu1", "ax2"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def load(model: onnx.ModelProto):
    data = model.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def valid_starts(size: int, k: int) -> list[int]:
    """The starts ONNX slices to exactly k elements: 0..size-k and -size..-k-1."""
    return list(range(0, size - k + 1)) + list(range(-size, -k))


def _inputs(starts, seed: int = 0, jitter: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-2.0, 2.0, (len(starts), N_IN)).astype(np.float32)
    s = np.asarray(starts, dtype=np.float32)
    if jitter:  # Cast truncates toward zero: s + 0.6 (s >= 0) or s - 0.6 (s < 0) is still s
        s = s + np.where(s >= 0, 0.6, -0.6).astype(np.float32)
    xs[:, N_DATA:] = s
    return xs


@pytest.mark.parametrize("const", [False, True], ids=["dynamic-data", "constant-data"])
@pytest.mark.parametrize("joint", [False, True], ids=["per-axis", "joint"])
@pytest.mark.parametrize("lengths", [(2, 3), (1, 5), (4, 1)])
def test_matches_onnxruntime_on_every_start_of_the_domain(lengths, joint, const):
    data = np.random.default_rng(3).normal(size=DATA_SHAPE) if const else None
    model = patch_model(lengths, data, joint)
    imported = load(model)
    assert "DynamicSlice" in imported.graph.op_types
    starts = list(itertools.product(valid_starts(4, lengths[0]), valid_starts(5, lengths[1])))
    for jitter in (False, True):
        xs = _inputs(starts, jitter=jitter)
        ours = run_graph(imported.graph, torch.from_numpy(xs))[0].detach().numpy()
        refs = ort_outputs(model, [{"x": x} for x in xs])
        for i, (got, ref) in enumerate(zip(ours, refs, strict=True)):
            np.testing.assert_array_equal(got.reshape(ref[0].shape), ref[0],
                                          err_msg=f"starts {starts[i]}")


def mixed_model(const_data: np.ndarray | None = None) -> onnx.ModelProto:
    """One Slice over axes 0, 1, 2 whose starts and ends are Concats of constants and input
    positions (as converters of strided slices write them): axis 0 a constant reversed slice
    2:0:-1, axes 1 and 2 at int64(x[60]) + [0, 2) and int64(x[61]) - 1 + [0, 3)."""
    model = patch_model((2, 3), const_data)
    g = model.graph
    keep = [n for n in g.node if n.output[0] not in ("mid", "y", "e0", "e1", "eu0", "eu1")]
    del g.node[:]
    g.initializer.extend(numpy_helper.from_array(np.asarray(v, dtype=np.int64), n) for n, v in (
        ("c2", [2]), ("c_stop", [0]), ("one", 1), ("k2", 2), ("ax012", [0, 1, 2]),
        ("steps012", [-1, 1, 1])))
    g.node.extend(keep + [
        helper.make_node("Sub", ["s1", "one"], ["s1m"]),
        helper.make_node("Unsqueeze", ["s1m", "ax0"], ["s1mu"]),
        helper.make_node("Concat", ["c2", "su0", "s1mu"], ["st"], axis=0),
        helper.make_node("Add", ["s0", "k0"], ["e0"]),
        helper.make_node("Add", ["s1", "k2"], ["e1"]),
        helper.make_node("Unsqueeze", ["e0", "ax0"], ["eu0"]),
        helper.make_node("Unsqueeze", ["e1", "ax0"], ["eu1"]),
        helper.make_node("Concat", ["c_stop", "eu0", "eu1"], ["en"], axis=0),
        helper.make_node("Slice", ["data", "st", "en", "ax012", "steps012"], ["y"])])
    return model


@pytest.mark.parametrize("const", [False, True], ids=["dynamic-data", "constant-data"])
def test_constant_and_input_dependent_axes_in_one_slice(const):
    data = np.random.default_rng(5).normal(size=DATA_SHAPE) if const else None
    model = mixed_model(data)
    imported = load(model)
    assert "DynamicSlice" in imported.graph.op_types
    # the column start is int64(x[61]) - 1: columns 1..3 and -4..-3 keep 3 elements
    starts = [(r, c + 1) for r in valid_starts(4, 2) for c in valid_starts(5, 3)]
    xs = _inputs(starts)
    ours = run_graph(imported.graph, torch.from_numpy(xs))[0].detach().numpy()
    refs = ort_outputs(model, [{"x": x} for x in xs])
    for i, (got, ref) in enumerate(zip(ours, refs, strict=True)):
        assert ref[0].shape == (2, 2, 3)
        np.testing.assert_array_equal(got.reshape(ref[0].shape), ref[0],
                                      err_msg=f"starts {starts[i]}")


def test_starts_that_clamp_give_nan_where_onnx_shortens_the_output():
    """Starts whose window is clamped (ONNX returns fewer than k elements) are outside the
    IR's domain: NaN, so the differential check against onnxruntime cannot pass there."""
    model = patch_model((2, 3))
    imported = load(model)
    starts = [(3, 0), (-1, 0), (-2, 0), (0, 3), (0, -3), (5, 0), (-9, 0), (0, 40)]
    xs = _inputs(starts)
    ours = run_graph(imported.graph, torch.from_numpy(xs))[0]
    assert torch.isnan(ours).flatten(1).all(1).all()
    refs = ort_outputs(model, [{"x": x} for x in xs])
    assert all(r[0].size < 3 * 2 * 3 for r in refs)  # onnxruntime: a shorter slice


def test_ends_not_a_constant_offset_of_the_starts_are_refused():
    with pytest.raises(UnsupportedOpError, match="ends - starts is not a constant"):
        load(patch_model(ends_from="other"))


def test_steps_other_than_one_are_refused():
    with pytest.raises(UnsupportedOpError, match="step 2 with input-dependent starts"):
        load(patch_model(steps=[2]))


def test_lengths_longer_than_the_axis_are_refused():
    with pytest.raises(UnsupportedOpError, match="ends - starts = 6 on an axis of size 5"):
        load(patch_model((2, 6)))


def test_constant_ends_with_dynamic_starts_are_refused():
    model = patch_model()
    for init in model.graph.initializer:
        if init.name == "k0":
            init.CopyFrom(numpy_helper.from_array(np.asarray(2, dtype=np.int64), "k0"))
    # ends of the first Slice: a constant instead of s0 + k0
    for node in model.graph.node:
        if node.output[0] == "mid":
            node.input[2] = "c60"
    with pytest.raises(UnsupportedOpError, match="ends - starts is not a constant"):
        load(model)


@pytest.mark.parametrize("name", ["patch-1.onnx", "patch-3.onnx"])
def test_cctsdb_slices_at_input_positions_import(name, benchmarks_dir):
    """The cctsdb models slice at the patch position (int64 of an input element); those Slices
    now import. The model as a whole still stops at its ScatterND, whose indices are built
    from the sliced positions (input-dependent indices are not handled yet)."""
    path = benchmarks_dir / "cctsdb_yolo_2023" / "onnx" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    try:
        load_model(path)
    except UnsupportedOpError as exc:
        assert exc.op != "Slice", str(exc)


def _position_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model cut after its last Slice at an input position (starts from an Unsqueeze),
    whose outputs are those Slices' (cast to float)."""
    made = {o: n for n in model.graph.node for o in n.output}
    nodes = list(model.graph.node)
    slices = [n for n in nodes if n.op_type == "Slice" and n.input[1] in made
              and made[n.input[1]].op_type == "Unsqueeze"]
    last = max(nodes.index(n) for n in slices)
    casts = [helper.make_node("Cast", [n.output[0]], [f"f{i}"], to=TensorProto.FLOAT)
             for i, n in enumerate(slices)]
    graph = helper.make_graph(
        nodes[:last + 1] + casts, "slices", list(model.graph.input),
        [helper.make_tensor_value_info(f"f{i}", TensorProto.FLOAT, None)
         for i in range(len(slices))],
        [i for i in model.graph.initializer if i.name in {x for n in nodes for x in n.input}])
    cut = helper.make_model(graph, opset_imports=model.opset_import)
    cut.ir_version = model.ir_version
    return cut


@pytest.mark.parametrize("name", ["patch-1.onnx", "patch-3.onnx"])
def test_cctsdb_position_slices_match_onnxruntime(name, benchmarks_dir):
    """The cctsdb Slices at the patch position (row r = int64(x[12288]) slices an axis of size
    3, column c = int64(x[12289]) one of size 64) against onnxruntime, at starts that keep the
    patch inside (r = 0; c from 0 to 64 - patch size, integers and in between)."""
    path = benchmarks_dir / "cctsdb_yolo_2023" / "onnx" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    cut = _position_slices(onnx.load(str(path)))
    imported = load(cut)
    assert "DynamicSlice" in imported.graph.op_types
    rng = np.random.default_rng(0)
    cols = [0.0, 0.5, 7.0, 30.9, 61.0]
    xs = rng.uniform(0.0, 1.0, (len(cols), imported.graph.inputs[0].shape[0]))
    xs = xs.astype(np.float32)
    xs[:, 12288], xs[:, 12289] = 0.0, cols
    ours = run_graph(imported.graph, torch.from_numpy(xs))
    refs = ort_outputs(cut, [{imported.input_names[0]: x} for x in xs])
    for i, ref in enumerate(refs):
        for k, r in enumerate(ref):
            np.testing.assert_array_equal(ours[k][i].numpy().reshape(r.shape), r)
