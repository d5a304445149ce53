"""Server-sent events, Prometheus metrics, per-key rate limits and batch submission."""

from __future__ import annotations

import json
import re

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

from server.metrics import Histogram
from server.ratelimit import RateLimiter
from server.settings import Settings


def read_events(client, job_id: str) -> list[tuple[str, dict]]:
    """(event name, data) of every event until the stream ends."""
    events, name = [], None
    with client.stream("GET", f"/v1/verifications/{job_id}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("observe"), job_runner="runners:stepper",
                            events_poll_s=0.05, max_batch=3)
    with client_for(settings) as c:
        yield c


def test_events_stream_progress_then_final(client):
    job_id = submit(client, SPEC_UNSAT, timeout=30).json()["id"]
    events = read_events(client, job_id)
    names = [n for n, _ in events]
    assert names[-1] == "final" and names.count("final") == 1
    assert set(names[:-1]) <= {"update"}
    assert any(d["progress"] for n, d in events if n == "update"), events
    last = events[-1][1]
    assert last["id"] == job_id and last["status"] == "done" and last["verdict"] == "unsat"
    assert read_events(client, job_id) == [events[-1]]  # a finished job: one final event
    assert client.get("/v1/verifications/nope/events").status_code == 404


def test_metrics_text(client):
    job_id = submit(client, SPEC_UNSAT, timeout=30).json()["id"]
    wait_final(client, job_id)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert sample(text, "nncert_jobs", '{status="done"}') >= 1
    assert sample(text, "nncert_queue_length") == 0
    assert sample(text, "nncert_workers", '{state="alive"}') == 1
    assert sample(text, "nncert_jobs_submitted_total") >= 1
    count = sample(text, "nncert_job_duration_seconds_count", '{outcome="unsat"}')
    assert count >= 1
    assert sample(text, "nncert_job_duration_seconds_bucket",
                  '{outcome="unsat",le="+Inf"}') == count
    assert "# TYPE nncert_job_duration_seconds histogram" in text


def test_batch_submission(client):
    model_id = client.post("/v1/models", files={"file": ("m", tiny_model_bytes())}).json()["id"]
    r = client.post("/v1/verifications/batch",
                    data={"model_id": model_id, "spec_texts": [SPEC_UNSAT, SPEC_SAT],
                          "timeout": "30"},
                    files=[("specs", ("a.vnnlib", SPEC_UNSAT.encode()))],
                    headers={"Idempotency-Key": "batch-1"})
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert len(items) == 3 and len({j["id"] for j in items}) == 3
    finals = [wait_final(client, j["id"]) for j in items]
    assert [j["verdict"] for j in finals] == ["unsat", "unsat", "sat"]
    again = client.post("/v1/verifications/batch",
                        data={"model_id": model_id, "spec_texts": [SPEC_UNSAT, SPEC_SAT],
                              "timeout": "30"},
                        files=[("specs", ("a.vnnlib", SPEC_UNSAT.encode()))],
                        headers={"Idempotency-Key": "batch-1"})
    assert [j["id"] for j in again.json()["items"]] == [j["id"] for j in items]


def test_batch_refusals(client):
    model_id = client.post("/v1/models", files={"file": ("m", tiny_model_bytes())}).json()["id"]
    before = client.get("/v1/verifications", params={"limit": 500}).json()["items"]
    r = client.post("/v1/verifications/batch", data={"model_id": model_id})
    assert r.status_code == 422 and "at least one spec" in r.json()["error"]["message"]
    r = client.post("/v1/verifications/batch",
                    data={"model_id": model_id, "spec_texts": [SPEC_UNSAT] * 4})
    assert r.status_code == 422 and "limit is 3" in r.json()["error"]["message"]
    r = client.post("/v1/verifications/batch",
                    data={"model_id": model_id, "spec_texts": [SPEC_UNSAT, "(assert"]})
    assert r.status_code == 422 and "invalid VNN-LIB" in r.json()["error"]["message"]
    after = client.get("/v1/verifications", params={"limit": 500}).json()["items"]
    assert len(after) == len(before)  # all or nothing


def test_rate_limit_per_key(tmp_path):
    settings = Settings.with_api_keys(["a", "b"], data_dir=tmp_path, workers=0,
                                      rate_limit_per_s=0.01, rate_limit_burst=2)
    with client_for(settings) as c:
        key_a, key_b = {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}
        assert [c.get("/v1/verifications", headers=key_a).status_code for _ in range(2)] == \
            [200, 200]
        r = c.get("/v1/verifications", headers=key_a)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "rate limit" in r.json()["error"]["message"]
        assert c.get("/v1/verifications", headers=key_b).status_code == 200  # own bucket
        assert c.get("/healthz").status_code == 200  # health is never limited
        metrics = c.get("/metrics", headers=key_b).text
        assert sample(metrics, "nncert_rate_limited_total") == 1


def test_token_bucket_refills():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("k") == 0.0 and limiter.take("other") == 0.0
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_histogram_is_cumulative():
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.5, 5.0):
        h.observe("x", v)
    lines = h.lines("d", "o")
    assert lines[:3] == ['d_bucket{o="x",le="1"} 1', 'd_bucket{o="x",le="2"} 2',
                         'd_bucket{o="x",le="+Inf"} 3']
    assert lines[-1] == 'd_count{o="x"} 3'
