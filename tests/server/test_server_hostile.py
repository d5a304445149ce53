"""A corpus of hostile uploads and requests: every one gets a 4xx JSON answer, none a 5xx,
and nothing is written outside the artifact store."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from server_util import SPEC_HEAD, SPEC_UNSAT, client_for, settings_for, tiny_model_bytes

from tests.onnx_builders import bad_initializer_model

TINY = tiny_model_bytes()


def relu_model(shape: list[int], opset: int = 13, domain: str = "", **tensor) -> bytes:
    """X -> Relu -> Y with the given static input shape (optionally an odd node domain)."""
    node = helper.make_node("Relu", ["X"], ["Y"], domain=domain)
    inits = [tensor["init"]] if "init" in tensor else []
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
                              inits)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain
                                                  else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model.SerializeToString()


def external(location: str) -> bytes:
    """A model whose initializer points at a file outside the upload."""
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def huge_initializer() -> bytes:
    """Declares a 10^12-element weight without sending it (dims only)."""
    big = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000])
    return relu_model([1, 2], init=big)


def many_nodes(n: int) -> bytes:
    nodes = [helper.make_node("Relu", [f"h{i}"], [f"h{i + 1}"]) for i in range(n)]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info(f"h{n}", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


def const_bomb() -> bytes:
    """ConstantOfShape to 10^12 elements, added to the input: constant folding would allocate."""
    shape = numpy_helper.from_array(np.array([1, 1_000_000, 1_000_000], np.int64), "S")
    nodes = [helper.make_node("ConstantOfShape", ["S"], ["C"]),
             helper.make_node("Add", ["X", "C"], ["Y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


def bad_init(kind: str) -> bytes:
    return bad_initializer_model(kind).SerializeToString()


def ir_version_99() -> bytes:
    import onnx

    model = onnx.load_model_from_string(relu_model([1, 2]))
    model.ir_version = 99
    return model.SerializeToString()


MODELS = {
    "garbage protobuf": b"\x08\x07garbage\xff\xff",
    "truncated model": TINY[: len(TINY) // 2],
    "text instead of protobuf": b"ir_version: 8\ngraph { }\n",
    "zip file": b"PK\x03\x04" + b"\0" * 64,
    "external data (relative traversal)": external("../../../../etc/passwd"),
    "external data (absolute path)": external("/etc/passwd"),
    "huge input dimension": relu_model([1, 1 << 40]),
    "huge dimensions, many axes": relu_model([1, 65536, 65536, 65536]),
    "zero dimension": relu_model([1, 0]),
    "negative dimension": relu_model([1, -5]),
    "constant-folding bomb": const_bomb(),
    "huge declared initializer": huge_initializer(),
    "custom op domain": relu_model([1, 2], domain="com.evil"),
    "opset from the future": relu_model([1, 2], opset=99),
    "too many nodes": many_nodes(60),
    "initializer data shorter than its dims": bad_init("short"),
    "initializer dims whose product wraps to 0": bad_init("wrapping"),
    "initializer of an unknown data type": bad_init("dtype"),
    "IR version from the future": ir_version_99(),
}

SPECS = {
    "unbalanced parentheses": "(assert (>= X_0",
    "deep nesting": "(assert " + "(and " * 20_000 + ")" * 20_001,
    "huge variable index": SPEC_HEAD + "(declare-const X_99999999999 Real)\n",
    "non-numeric bound": SPEC_HEAD.replace("1.0))\n", "abc))\n", 1),
    "overflowing literal": SPEC_HEAD + "(assert (>= Y_0 1e999999))\n",
    "NUL bytes": SPEC_UNSAT.replace("Real", "Re\0al", 1),
    "unknown command": SPEC_UNSAT + "(exec \"rm -rf /\")\n",
    "huge 2.0 tensor": "(vnnlib-version <2.0>)\n(declare-network N (declare-input X float32 "
                       "[1,100000000000]) (declare-output Y float32 [1,1]))\n",
    "many terms": SPEC_HEAD + "(assert (or " + "(and (>= Y_0 1.0))" * 5000 + "))\n",
    "index of 5,000 digits": SPEC_HEAD + "(declare-const X_" + "9" * 5000 + " Real)\n",
    "2.0 dimension of 5,000 digits": "(vnnlib-version <2.0>)\n(declare-network N (declare-input "
                                     "X float32 [1," + "9" * 5000 + "]) (declare-output Y "
                                     "float32 [1,1]))\n",
}

SPEC_BYTES = {
    "gzip bomb": gzip.compress(b"\n" * 2_000_000),
    "corrupt gzip": b"\x1f\x8b\x08\x00" + b"\xff" * 40,
    "not UTF-8": b"(declare-const X_0 Real)\xff\xfe\n",
    "oversized": SPEC_UNSAT.encode() + b";" * 9000,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile") / "data"


@pytest.fixture(scope="module")
def client(data_dir):
    settings = settings_for(data_dir, workers=0, max_nodes=50, max_parameters=1_000_000,
                            max_spec_bytes=8192, max_spec_terms=1000,
                            max_request_bytes=256 * 1024)
    with client_for(settings) as c:
        yield c


def assert_4xx(r, *allowed: int) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if allowed:
        assert r.status_code in allowed, (r.status_code, r.text[:300])
    body = r.json()
    assert body["error"]["status"] == r.status_code and body["error"]["message"]


@pytest.mark.parametrize("name", list(MODELS))
def test_hostile_models(client, name):
    assert_4xx(client.post("/v1/models", files={"file": ("../../evil.onnx", MODELS[name])}))
    r = client.post("/v1/verifications", files={"model": ("/etc/passwd", MODELS[name])},
                    data={"spec_text": SPEC_UNSAT})
    assert_4xx(r)


@pytest.mark.parametrize("name", list(SPECS))
def test_hostile_spec_texts(client, name):
    r = client.post("/v1/verifications", files={"model": ("m.onnx", TINY)},
                    data={"spec_text": SPECS[name]})
    assert_4xx(r, 413, 422)


@pytest.mark.parametrize("name", list(SPEC_BYTES))
def test_hostile_spec_files(client, name):
    r = client.post("/v1/verifications", files={"model": ("m.onnx", TINY),
                                                "spec": ("../../s.vnnlib.gz", SPEC_BYTES[name])})
    assert_4xx(r, 400, 413, 422)


@pytest.mark.parametrize("headers, content", [
    ({"content-type": "application/json"}, b'{"model_id": "x"}'),
    ({"content-type": "text/plain"}, b"hello"),
    ({"content-type": "application/octet-stream"}, TINY),
    ({"content-type": "multipart/form-data"}, b"no boundary"),
    ({"content-type": "multipart/form-data; boundary=xyz"}, b"--xyz\r\nbroken"),
    ({"content-type": "application/x-www-form-urlencoded"}, b"%%%=%%%&model_id=%zz"),
    ({}, b""),
], ids=["json", "text", "octets", "no-boundary", "broken-multipart", "bad-urlencoded",
        "no-content-type"])
@pytest.mark.parametrize("path", ["/v1/models", "/v1/verifications", "/v1/verifications/batch"])
def test_wrong_content_types(client, path, headers, content):
    assert_4xx(client.post(path, content=content, headers=headers))


@pytest.mark.parametrize("path", [
    "/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/" + "a" * 10_000,
    "/v1/verifications/..%2Fnncert.sqlite3", "/v1/verifications/%00",
    "/v1/verifications/..%2F..%2F/results", "/v1/verifications/x/events",
])
def test_hostile_ids(client, path):
    assert_4xx(client.get(path), 404)


def test_hostile_form_fields(client):
    r = client.post("/v1/verifications", data={"model_id": "0" * 64 + "\0",
                                               "spec_text": SPEC_UNSAT})
    assert_4xx(r, 404)
    r = client.post("/v1/verifications", data={"model": "not a file", "spec_text": SPEC_UNSAT})
    assert_4xx(r, 422)
    r = client.post("/v1/verifications", files={"model": ("m", TINY)},
                    data={"spec_text": SPEC_UNSAT, "timeout": "nan"})
    assert_4xx(r, 422)
    r = client.post("/v1/verifications", files={"model": ("m", TINY)},
                    data={"spec_text": SPEC_UNSAT, "timeout": "inf"})
    assert_4xx(r, 422)
    fields = "&".join(["spec_texts=x"] * 1500)  # above the form parser's field limit
    r = client.post("/v1/verifications/batch", content=fields,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert_4xx(r, 400, 413, 422)


def test_nothing_escaped_the_store(client, data_dir):
    names = {p.name for p in data_dir.parent.rglob("*")}
    assert not names & {"evil.onnx", "passwd", "s.vnnlib.gz", "etc"}
    for kind in ("models", "specs"):
        assert all(len(p.name) == 64 for p in (data_dir / "artifacts" / kind).iterdir())
