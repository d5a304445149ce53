"""End to end through TestClient with a real worker process running verify()."""

from __future__ import annotations

import onnx
import pytest
from server_util import (
    SPEC_SAT,
    SPEC_UNSAT,
    client_for,
    settings_for,
    submit,
    tiny_model_bytes,
    wait_final,
)

from verifier.config import VerifyConfig
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify
from verifier.spec import parse_vnnlib


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with client_for(settings_for(tmp_path_factory.mktemp("data"))) as c:
        yield c


def direct_verdict(spec: str) -> str:
    data = tiny_model_bytes()
    model = import_proto(onnx.load_model_from_string(data), data)
    return verify(model, parse_vnnlib(spec), VerifyConfig(timeout=60)).verdict


def test_health_ready_ops(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] == 1
    ops = client.get("/v1/ops").json()["onnx_operators"]
    assert {"Relu", "MatMul", "Gemm"} <= set(ops)


def test_upload_model_summary(client):
    r = client.post("/v1/models", files={"file": ("m.onnx", tiny_model_bytes())})
    assert r.status_code == 201, r.text
    summary = r.json()
    assert summary["inputs"] == [{"name": "X", "shape": [1, 2]}]
    assert summary["outputs"] == [{"name": "Y", "shape": [1, 1]}]
    assert summary["ops"] == {"Add": 2, "MatMul": 2, "Relu": 1}
    assert summary["parameters"] == 4 + 2 + 2 + 1
    again = client.post("/v1/models", files={"file": ("other.onnx", tiny_model_bytes())})
    assert again.json()["id"] == summary["id"]
    assert client.get(f"/v1/models/{summary['id']}").json() == summary


@pytest.mark.parametrize("spec", [SPEC_UNSAT, SPEC_SAT], ids=["unsat", "sat"])
def test_verdict_matches_verify(client, spec):
    r = submit(client, spec, timeout=60)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/verifications/{job['id']}"
    assert job["status"] in ("queued", "running")
    final = wait_final(client, job["id"])
    assert final["status"] == "done", final
    assert final["verdict"] == direct_verdict(spec)
    assert final["attempts"] == 1 and final["finished_at"]
    text = client.get(f"/v1/verifications/{job['id']}/results").text
    lines = text.splitlines()
    assert lines[0] == final["verdict"]
    if final["verdict"] == "sat":
        cex = final["counterexample"]
        assert len(cex["x"]) == 2 and len(cex["y"]) == 1 and cex["y"][0] >= 1.5
        assert lines[1].startswith("((X_0 ") and lines[-1].startswith(" (Y_0 ")
        assert lines[-1].endswith("))")
    else:
        assert lines == ["unsat"]


def test_idempotency_key(client):
    key = {"Idempotency-Key": "abc-123"}
    first = submit(client, SPEC_UNSAT, headers=key, timeout=30)
    second = submit(client, SPEC_UNSAT, headers=key, timeout=30)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    other = submit(client, SPEC_SAT, headers=key, timeout=30)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["error"]["message"]
    wait_final(client, first.json()["id"])


def test_list_filter_and_cursor(client):
    model_id = client.post("/v1/models", files={"file": ("m", tiny_model_bytes())}).json()["id"]
    ids = [submit(client, SPEC_UNSAT, model_id=model_id, timeout=30).json()["id"]
           for _ in range(3)]
    for job_id in ids:
        wait_final(client, job_id)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "status": "done"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/verifications", params=params).json()
        assert all(j["status"] == "done" for j in page["items"])
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
    assert client.get("/v1/verifications", params={"status": "nope"}).status_code == 422
    assert client.get("/v1/verifications", params={"cursor": "x"}).status_code == 422


def test_finished_job_cannot_be_cancelled(client):
    job_id = submit(client, SPEC_UNSAT, timeout=30).json()["id"]
    wait_final(client, job_id)
    r = client.delete(f"/v1/verifications/{job_id}")
    assert r.status_code == 409 and "already done" in r.json()["error"]["message"]
