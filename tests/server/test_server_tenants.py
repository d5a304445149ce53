"""Tenant isolation: jobs and models belong to the API key that created them.

Another key gets 404 (not 403: a job's or a model's existence does not leak) on every route
that names one; an admin key sees and cancels everything. No workers run (``workers=0``), so
jobs stay queued and every state below is reached without waiting.
"""

from __future__ import annotations

import hashlib

import pytest
from server_util import SPEC_SAT, SPEC_UNSAT, client_for, submit, tiny_model_bytes

from server.settings import Settings

A, B, ADMIN = "key-a", "key-b", "key-admin"


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def client(tmp_path):
    settings = Settings.with_api_keys([A, B], admin_keys=[ADMIN], data_dir=tmp_path / "data",
                                      workers=0)
    with client_for(settings) as c:
        yield c


@pytest.fixture()
def job_of_a(client) -> dict:
    r = submit(client, SPEC_UNSAT, headers=bearer(A))
    assert r.status_code == 202, r.text
    return r.json()


def job_routes(job_id: str) -> list[tuple[str, str]]:
    base = f"/v1/verifications/{job_id}"
    return [("GET", base), ("GET", base + "/results"), ("GET", base + "/events"),
            ("DELETE", base)]


def test_other_key_gets_404_on_every_job_route(client, job_of_a):
    for method, path in job_routes(job_of_a["id"]):
        r = client.request(method, path, headers=bearer(B))
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["message"] == f"no verification job with id {job_of_a['id']!r}"
    # B's DELETE did not cancel A's job
    mine = client.get(f"/v1/verifications/{job_of_a['id']}", headers=bearer(A)).json()
    assert mine["status"] == "queued"


def test_404_for_another_key_equals_404_for_no_job(client, job_of_a):
    """The answer for someone else's job is byte for byte the one for an unknown id."""
    unknown = "0" * 32
    theirs = client.get(f"/v1/verifications/{job_of_a['id']}", headers=bearer(B))
    missing = client.get(f"/v1/verifications/{unknown}", headers=bearer(B))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"].replace(job_of_a["id"], unknown) == \
        missing.json()["error"]["message"]


def test_list_shows_only_own_jobs(client, job_of_a):
    r = submit(client, SPEC_SAT, headers=bearer(B))
    job_of_b = r.json()
    seen_a = [j["id"] for j in client.get("/v1/verifications", headers=bearer(A)).json()["items"]]
    seen_b = [j["id"] for j in client.get("/v1/verifications", headers=bearer(B)).json()["items"]]
    assert seen_a == [job_of_a["id"]]
    assert seen_b == [job_of_b["id"]]
    queued_b = client.get("/v1/verifications?status=queued", headers=bearer(B)).json()["items"]
    assert [j["id"] for j in queued_b] == [job_of_b["id"]]


def test_owner_reaches_every_job_route(client, job_of_a):
    job_id = job_of_a["id"]
    assert client.get(f"/v1/verifications/{job_id}", headers=bearer(A)).status_code == 200
    assert client.get(f"/v1/verifications/{job_id}/results",
                      headers=bearer(A)).status_code == 409  # queued: no results yet
    assert client.delete(f"/v1/verifications/{job_id}", headers=bearer(A)).status_code == 200
    events = client.get(f"/v1/verifications/{job_id}/events", headers=bearer(A))
    assert events.status_code == 200 and "event: final" in events.text


def test_admin_sees_and_cancels_every_job(client, job_of_a):
    job_of_b = submit(client, SPEC_SAT, headers=bearer(B)).json()
    listed = client.get("/v1/verifications", headers=bearer(ADMIN)).json()["items"]
    assert {j["id"] for j in listed} == {job_of_a["id"], job_of_b["id"]}
    assert client.get(f"/v1/verifications/{job_of_a['id']}",
                      headers=bearer(ADMIN)).status_code == 200
    r = client.delete(f"/v1/verifications/{job_of_b['id']}", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    events = client.get(f"/v1/verifications/{job_of_b['id']}/events", headers=bearer(ADMIN))
    assert "event: final" in events.text


def test_models_belong_to_their_uploaders(client, job_of_a):
    model_id = job_of_a["model_id"]
    assert client.get(f"/v1/models/{model_id}", headers=bearer(A)).status_code == 200
    assert client.get(f"/v1/models/{model_id}", headers=bearer(B)).status_code == 404
    assert client.get(f"/v1/models/{model_id}", headers=bearer(ADMIN)).status_code == 200
    by_id = submit(client, SPEC_UNSAT, model_id=model_id, headers=bearer(B))
    assert by_id.status_code == 404, by_id.text
    batch = client.post("/v1/verifications/batch", headers=bearer(B),
                        data={"model_id": model_id, "spec_texts": [SPEC_UNSAT]})
    assert batch.status_code == 404, batch.text


def test_uploading_the_same_bytes_makes_another_owner(client, job_of_a):
    """Models are content-addressed: B uploading the same file owns it too (A keeps it)."""
    r = client.post("/v1/models", headers=bearer(B),
                    files={"file": ("net.onnx", tiny_model_bytes(), "application/octet-stream")})
    assert r.status_code == 201
    assert r.json()["id"] == hashlib.sha256(tiny_model_bytes()).hexdigest()
    for key in (A, B):
        assert client.get(f"/v1/models/{r.json()['id']}", headers=bearer(key)).status_code == 200
    assert submit(client, SPEC_UNSAT, model_id=r.json()["id"],
                  headers=bearer(B)).status_code == 202


def test_same_idempotency_key_for_two_callers_makes_two_jobs(client):
    headers_a = {**bearer(A), "Idempotency-Key": "k1"}
    headers_b = {**bearer(B), "Idempotency-Key": "k1"}
    first = submit(client, SPEC_UNSAT, headers=headers_a).json()
    second = submit(client, SPEC_UNSAT, headers=headers_b).json()
    assert first["id"] != second["id"]


def test_admin_key_file_on_the_command_line(tmp_path):
    import argparse

    from server.cli import add_serve_command, settings_from_args

    (tmp_path / "admins").write_text(ADMIN + "\n")
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers())
    args = parser.parse_args(["serve", "--admin-keys-file", str(tmp_path / "admins"),
                              "--data-dir", str(tmp_path / "d")])
    settings = settings_from_args(args)
    assert settings.auth_required and settings.is_admin(ADMIN) and not settings.is_admin(A)
