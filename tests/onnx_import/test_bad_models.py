"""Bad models raise ModelError / UnsupportedOpError with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.onnx_builders import bad_initializer_model
from tests.onnx_import.onnx_util import compare, make_model, one_node
from verifier.errors import ModelError, UnsupportedOpError
from verifier.onnx_import.loader import import_proto, load_model, parse_model_bytes

ROOT = Path(__file__).resolve().parents[2]


def _import(model: onnx.ModelProto):
    data = model.SerializeToString()
    return import_proto(parse_model_bytes(data), data)


def test_malformed_bytes(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage\xff\xff\xff")
    with pytest.raises(ModelError, match="not a valid ONNX"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="cannot read model"):
        load_model(tmp_path / "nope.onnx")


def test_external_data_refused():
    model = one_node("Add", {"x": (1, 3)}, {"c": np.ones(3, np.float32)})
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    with pytest.raises(ModelError, match="external data"):
        parse_model_bytes(model.SerializeToString())


def _external(name: str, location: str) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[3])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _if_model(branch_tensor: onnx.TensorProto) -> onnx.ModelProto:
    """y = x + (If s > 0: the branch's constant, else 0): a tensor only a subgraph holds."""
    def branch(name, value):
        return helper.make_graph([helper.make_node("Constant", [], [name], value=value)], name,
                                 [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, [3])])

    zero = onnx.numpy_helper.from_array(np.zeros(3, np.float32), "z")
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["k"], then_branch=branch("t", branch_tensor),
                              else_branch=branch("e", zero)),
             helper.make_node("Add", ["x", "k"], ["y"])]
    x, y = (helper.make_tensor_value_info(v, TensorProto.FLOAT, [3]) for v in "xy")
    graph = helper.make_graph(nodes, "g", [x], [y],
                              [onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_external_data_in_a_subgraph_is_refused():
    """Subgraphs and sparse initializers are searched too (only the main graph was)."""
    model = _if_model(_external("hidden", "../../../../etc/hostname"))
    with pytest.raises(ModelError, match="'hidden' refers to external data"):
        parse_model_bytes(model.SerializeToString())
    plain = _if_model(onnx.numpy_helper.from_array(np.ones(3, np.float32), "shown"))
    sparse = onnx.SparseTensorProto(values=_external("sparse", "w.bin"), dims=[3])
    sparse.indices.CopyFrom(onnx.numpy_helper.from_array(np.array([0], np.int64), "i"))
    plain.graph.sparse_initializer.append(sparse)
    with pytest.raises(ModelError, match="'sparse' refers to external data"):
        parse_model_bytes(plain.SerializeToString())


def test_unsupported_op_names_op_node_and_list():
    model = one_node("Hardmax", {"x": (1, 4)})
    with pytest.raises(UnsupportedOpError) as info:
        _import(model)
    message = str(info.value)
    assert "Hardmax" in message and "the_hardmax" in message
    assert "supported:" in message and "Conv" in message


def test_custom_domain():
    node = helper.make_node("MyOp", ["x"], ["y"], domain="com.example", name="custom")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(ModelError, match="com.example"):
        _import(model)


def test_dynamic_weights_refused():
    """A valid model we cannot import: UnsupportedOpError naming the op, node and the reason
    (the attack can still run it in onnxruntime)."""
    model = one_node("Conv", {"x": (1, 1, 4, 4), "w": (1, 1, 2, 2)})
    with pytest.raises(UnsupportedOpError, match="'Conv' .*'the_conv'.*input-dependent weights"):
        _import(model)


@pytest.mark.parametrize("op,inputs", [
    ("Reshape", {"x": (1, 4), "s": (2,)}),
    ("Range", {"x": (), "s": (), "d": ()}),
])
def test_operand_that_must_be_constant_names_the_op(op, inputs):
    model = one_node(op, inputs)
    with pytest.raises(UnsupportedOpError, match=f"'{op}' .*input"):
        _import(model)


def test_symbolic_inner_dimension():
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [vi],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(ModelError, match="symbolic dimension"):
        _import(helper.make_model(graph))


def test_constant_output_refused():
    nodes = [helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("Identity", ["c"], ["z"])]
    model = make_model(nodes, {"x": (1, 2)}, ["y", "z"], {"c": np.ones(2, np.float32)})
    with pytest.raises(ModelError, match="does not depend on the input"):
        _import(model)


def test_conversion_failure_is_model_error():
    model = one_node("Reshape", {"x": (1, 6)}, {"s": np.array([4, 4], np.int64)})
    with pytest.raises(ModelError, match="reshape"):
        _import(model)



@pytest.mark.parametrize("kind, words", [
    ("short", "cannot be read"), ("wrapping", "18446744073709551616 elements"),
    ("dtype", "unknown data type 999")])
def test_malformed_initializer_is_a_model_error_naming_it(kind, words):
    proto = bad_initializer_model(kind)
    with pytest.raises(ModelError, match="initializer 'C'") as err:
        import_proto(proto, proto.SerializeToString())
    assert words in str(err.value)


def test_ir_version_from_the_future_is_a_model_error():
    proto = onnx.load(str(ROOT / "vnnlib_specs" / "tiny.onnx"))
    proto.ir_version = onnx.IR_VERSION + 85
    with pytest.raises(ModelError, match=f"IR version {onnx.IR_VERSION + 85}"):
        parse_model_bytes(proto.SerializeToString(), "m.onnx")


def _half_model(input_type, nodes, weight_type=np.float16):
    w = np.array([[1.0, -2.0], [0.5, 1.5]], dtype=weight_type)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", input_type, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_half_precision_input_is_refused():
    """Rounding at 2**-11 per operation is outside the float32 model the bounds hold."""
    model = _half_model(TensorProto.FLOAT16, [helper.make_node("MatMul", ["x", "w"], ["h"]),
                                              helper.make_node("Cast", ["h"], ["y"], to=1)])
    with pytest.raises(UnsupportedOpError, match="float16 input"):
        _import(model)


def test_half_precision_computation_is_refused_at_its_first_node():
    model = _half_model(TensorProto.FLOAT, [
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
        helper.make_node("Reshape", ["xh", "s"], ["xr"]),
        helper.make_node("MatMul", ["xr", "w"], ["h"], name="half_matmul"),
        helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 2]), "s"))
    with pytest.raises(UnsupportedOpError, match="'half_matmul'.*computes in float16"):
        _import(model)


def test_half_weights_cast_to_float_and_a_half_rounding_import():
    """Casts are modelled: half weights cast to float are exact constants, and a value cast
    to half and back is a rounding node."""
    model = _half_model(TensorProto.FLOAT, [
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["xh"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "wf"], ["y"])])
    assert "Cast" in _import(model).graph.op_types


def test_gzip_compressed_model_loads(tmp_path):
    """VNN-COMP ships models as .onnx.gz: read like the plain file."""
    import gzip

    model = one_node("Relu", {"x": (1, 3)})
    path = tmp_path / "m.onnx.gz"
    path.write_bytes(gzip.compress(model.SerializeToString()))
    loaded = load_model(path)
    assert "Relu" in loaded.graph.op_types
    assert onnx.load_model_from_string(loaded.onnx_bytes).graph.node[0].op_type == "Relu"


def test_truncated_gzip_model_is_named(tmp_path):
    import gzip

    data = gzip.compress(one_node("Relu", {"x": (1, 3)}).SerializeToString())
    path = tmp_path / "m.onnx.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated gzip stream"):
        load_model(path)


def test_model_cap_refuses_a_gzip_bomb(tmp_path, monkeypatch):
    import gzip

    import verifier.onnx_import.loader as loader

    monkeypatch.setattr(loader, "MAX_MODEL_BYTES", 1000)
    path = tmp_path / "bomb.onnx.gz"
    path.write_bytes(gzip.compress(b"\0" * 100_000))
    with pytest.raises(ModelError, match="possible gzip bomb"):
        load_model(path)


def _saved_with_external_data(tmp_path, location: str = "model.onnx.data",
                              folder_name: str = "m") -> tuple[onnx.ModelProto, object]:
    """A two-initializer model saved as torch's exporter does: weights in one data file
    beside the model (offsets into it). Returns the inline model and the saved path."""
    rng = np.random.default_rng(0)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["h"]),
                        helper.make_node("Add", ["h", "b"], ["y"])], {"x": (1, 4)}, ["y"],
                       {"w": rng.normal(size=(4, 3)).astype(np.float32),
                        "b": rng.normal(size=3).astype(np.float32)})
    inline = onnx.ModelProto()
    inline.CopyFrom(model)
    folder = tmp_path / folder_name
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return inline, path


def test_external_data_beside_the_model_is_embedded(tmp_path):
    from verifier.onnx_import.loader import read_model_proto

    inline, path = _saved_with_external_data(tmp_path)
    assert any(t.data_location == TensorProto.EXTERNAL
               for t in onnx.load_model(str(path), load_external_data=False).graph.initializer)
    proto, data = read_model_proto(path)
    assert all(t.data_location != TensorProto.EXTERNAL for t in proto.graph.initializer)
    for ours, theirs in zip(proto.graph.initializer, inline.graph.initializer, strict=True):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(ours),
                                      onnx.numpy_helper.to_array(theirs))
    compare(onnx.load_model_from_string(data))  # onnxruntime runs the returned bytes
    assert load_model(path).graph.nodes


def _point_at(path, location: str, offset: int | None = None, length: int | None = None):
    """Rewrite the first initializer's external-data entry of the model at ``path``."""
    model = onnx.load_model(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    keep = {e.key: e.value for e in tensor.external_data}
    keep["location"] = location
    if offset is not None:
        keep["offset"] = str(offset)
    if length is not None:
        keep["length"] = str(length)
    del tensor.external_data[:]
    for k, v in keep.items():
        tensor.external_data.add(key=k, value=v)
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("location,match", [
    ("../outside.bin", "not a relative path inside"),
    ("/etc/hostname", "not a relative path inside"),
    ("missing.bin", "not a file in the model's folder"),
    ("link.bin", "not a file in the model's folder"),  # a link out of the folder
])
def test_external_data_outside_the_folder_is_refused(tmp_path, location, match):
    from verifier.onnx_import.loader import read_model_proto

    _, path = _saved_with_external_data(tmp_path)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    (path.parent / "link.bin").symlink_to(tmp_path / "outside.bin")
    _point_at(path, location)
    with pytest.raises(ModelError, match=match):
        read_model_proto(path)


@pytest.mark.parametrize("offset,length", [(0, 4), (10**6, None), (-4, 48)])
def test_external_data_of_the_wrong_size_is_refused(tmp_path, offset, length):
    from verifier.onnx_import.loader import read_model_proto

    _, path = _saved_with_external_data(tmp_path)
    _point_at(path, "model.onnx.data", offset, length)
    with pytest.raises(ModelError, match="bytes expected"):
        read_model_proto(path)


def test_constant_nodes_of_ops_without_a_converter_fold():
    """Mod on shape constants (torch's MultiheadAttention export): folded like any constant
    arithmetic; a random op is not (a folded sample would not be the model)."""
    nodes = [helper.make_node("Mod", ["a", "b"], ["m"]),
             helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "mf"], ["y"])]
    model = make_model(nodes, {"x": (1, 3)}, ["y"], {"a": np.array([7, 8, 9], np.int64),
                                                      "b": np.array(4, np.int64)})
    compare(model)
    random = make_model([helper.make_node("RandomNormalLike", ["c"], ["r"]),
                         helper.make_node("Add", ["x", "r"], ["y"])], {"x": (1, 3)}, ["y"],
                        {"c": np.zeros(3, np.float32)})
    with pytest.raises(UnsupportedOpError, match="RandomNormalLike"):
        _import(random)
