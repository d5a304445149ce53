"""Bad requests get clear 4xx JSON errors; nothing runs (0 workers), so these are fast."""

from __future__ import annotations

import gzip

import pytest
from server_util import SPEC_HEAD, SPEC_UNSAT, client_for, settings_for, submit, tiny_model_bytes

from server.settings import Settings


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs") / "data"


@pytest.fixture(scope="module")
def client(data_dir):
    settings = settings_for(data_dir, workers=0, max_model_bytes=4096, max_spec_bytes=2048,
                            max_request_bytes=64 * 1024, max_timeout=100,
                            default_timeout=50)
    with client_for(settings) as c:
        yield c


def message(r) -> str:
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == r.status_code
    return body["error"]["message"]


def test_malformed_protobuf_is_400(client):
    r = client.post("/v1/models", files={"file": ("m.onnx", b"\x08\x07garbage\xff\xff")})
    assert r.status_code == 400 and "not a valid ONNX" in message(r)
    r = submit(client, SPEC_UNSAT, model=b"not a model at all")
    assert r.status_code == 400


def test_empty_and_unsupported_models(client):
    r = client.post("/v1/models", files={"file": ("m.onnx", b"")})
    assert r.status_code == 400 and "empty" in message(r)
    from onnx import TensorProto, helper

    node = helper.make_node("NonMaxSuppression", ["X"], ["Y"])
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    r = client.post("/v1/models", files={"file": ("m.onnx", model.SerializeToString())})
    assert r.status_code == 422 and "NonMaxSuppression" in message(r)


def test_path_traversal_name_never_reaches_filesystem(client, data_dir):
    name = "../../etc/passwd"
    r = client.post("/v1/models", files={"file": (name, tiny_model_bytes())})
    assert r.status_code == 201
    model_id = r.json()["id"]
    stored = sorted(p.name for p in (data_dir / "artifacts" / "models").iterdir())
    assert stored == [model_id]
    assert not (data_dir / name).exists() and not (data_dir.parent / "etc").exists()
    assert all("passwd" not in p.name for p in data_dir.rglob("*"))
    r = client.get("/v1/models/..%2F..%2Fetc%2Fpasswd")
    assert r.status_code == 404


def test_model_only_onnxruntime_runs_is_accepted_for_attacks(client):
    """The importer has no converter for Sinh, onnxruntime runs it: accepted, marked
    attack-only (its jobs answer sat or unknown, as ``nncert verify`` does)."""
    from onnx import TensorProto, helper

    node = helper.make_node("Sinh", ["X"], ["Y"], name="the_sinh")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    r = client.post("/v1/models", files={"file": ("m.onnx", model.SerializeToString())})
    assert r.status_code == 201, r.text
    body = r.json()
    assert "Sinh" in body["attack_only"]
    assert body["inputs"] == [{"name": "X", "shape": [1, 2]}]
    assert body["outputs"] == [{"name": "Y", "shape": [1, 2]}]


def test_wrong_content_type_is_415(client):
    r = client.post("/v1/models", content=tiny_model_bytes(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415 and "multipart" in message(r)
    r = client.post("/v1/verifications", json={"model_id": "x", "spec_text": SPEC_UNSAT})
    assert r.status_code == 415


def test_oversized_uploads_are_413(client):
    r = client.post("/v1/models", files={"file": ("m.onnx", b"\0" * 5000)})
    assert r.status_code == 413 and "4096" in message(r)
    r = client.post("/v1/models", files={"file": ("m.onnx", b"\0" * 70_000)})
    assert r.status_code == 413 and "request body" in message(r)
    big_spec = SPEC_UNSAT + ";" * 3000
    r = client.post("/v1/verifications",
                    files={"model": ("m", tiny_model_bytes()), "spec": ("s", big_spec.encode())})
    assert r.status_code == 413


def test_gzip_bomb_spec_is_413(client):
    bomb = gzip.compress(b";" * 1_000_000)
    assert len(bomb) < 4096
    r = client.post("/v1/verifications",
                    files={"model": ("m", tiny_model_bytes()), "spec": ("s.vnnlib.gz", bomb)})
    assert r.status_code == 413 and "gzip bomb" in message(r)
    r = client.post("/v1/verifications", files={
        "model": ("m", tiny_model_bytes()), "spec": ("s.gz", gzip.compress(SPEC_UNSAT.encode()))})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("spec, needle", [
    ("(assert (>= X_0", "invalid VNN-LIB"),
    (SPEC_HEAD.replace("(declare-const X_1 Real)\n", "").replace(
        "(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n", "") + "(assert (>= Y_0 3.0))",
     "input variables"),
])
def test_bad_or_mismatched_spec_is_422(client, spec, needle):
    r = submit(client, spec)
    assert r.status_code == 422 and needle in message(r)


def test_bad_options_are_422(client):
    assert submit(client, SPEC_UNSAT, method="magic").status_code == 422
    assert submit(client, SPEC_UNSAT, timeout=-1).status_code == 422
    r = submit(client, SPEC_UNSAT, timeout=1000)
    assert r.status_code == 422 and "limit" in message(r)
    r = client.post("/v1/verifications", data={"spec_text": SPEC_UNSAT})
    assert r.status_code == 422 and "model" in message(r)
    r = client.post("/v1/verifications", files={"model": ("m", tiny_model_bytes())})
    assert r.status_code == 422 and "spec" in message(r)


def test_unknown_ids_are_404(client):
    assert submit(client, SPEC_UNSAT, model_id="0" * 64).status_code == 404
    assert submit(client, SPEC_UNSAT, model_id="../x").status_code == 404
    for path in ("/v1/verifications/nope", "/v1/verifications/nope/results"):
        assert client.get(path).status_code == 404
    assert client.delete("/v1/verifications/nope").status_code == 404


def test_cancel_queued_job_and_results_conflict(client):
    r = submit(client, SPEC_UNSAT)
    job_id = r.json()["id"]
    assert r.json()["options"]["timeout"] == 50
    r = client.get(f"/v1/verifications/{job_id}/results")
    assert r.status_code == 409 and "queued" in message(r)
    r = client.delete(f"/v1/verifications/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.delete(f"/v1/verifications/{job_id}").status_code == 409
    listed = client.get("/v1/verifications", params={"status": "cancelled"}).json()["items"]
    assert job_id in [j["id"] for j in listed]


def test_api_keys(tmp_path):
    settings = Settings.with_api_keys(["s3cret"], data_dir=tmp_path, workers=0)
    assert "s3cret" not in settings.model_dump_json()
    with client_for(settings) as c:
        assert c.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.get("/v1/verifications", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/ops").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/verifications", headers=good).status_code == 200
        assert submit(c, SPEC_UNSAT, headers=good).status_code == 202
