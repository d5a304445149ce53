"""Store-level behaviour: restart recovery, attempts, idempotency, content addressing."""

from __future__ import annotations

import hashlib

import pytest

from server.artifacts import Artifacts
from server.store import IdempotencyConflict, Store

OPTS = {"timeout": 10.0, "method": "auto", "device": "auto"}


def test_running_job_is_requeued_after_restart(tmp_path):
    store = Store(tmp_path)
    job, _ = store.create_job("m" * 64, "s" * 64, OPTS)
    claimed = store.claim_next()
    assert claimed.id == job.id and claimed.status == "running" and claimed.attempts == 1
    store.close()  # the "crash": the job is left running
    restarted = Store(tmp_path)
    again = restarted.get_job(job.id)
    assert again.status == "queued" and again.attempts == 1
    assert restarted.claim_next().attempts == 2
    assert restarted.finish(job.id, "done", verdict="unsat")
    restarted.close()
    assert Store(tmp_path).get_job(job.id).verdict == "unsat"  # results survive restarts


def test_job_out_of_attempts_fails(tmp_path):
    store = Store(tmp_path, max_attempts=1)
    job, _ = store.create_job("m" * 64, "s" * 64, OPTS)
    store.claim_next()
    store.close()
    failed = Store(tmp_path, max_attempts=1).get_job(job.id)
    assert failed.status == "failed" and "attempts" in failed.message


def test_finish_after_cancel_is_ignored(tmp_path):
    store = Store(tmp_path)
    job, _ = store.create_job("m" * 64, "s" * 64, OPTS)
    store.claim_next()
    assert store.cancel(job.id) == "running"
    assert not store.finish(job.id, "done", verdict="sat")
    assert store.get_job(job.id).status == "cancelled"


def test_idempotency_scoped_by_owner(tmp_path):
    store = Store(tmp_path)
    a, created = store.create_job("m" * 64, "s" * 64, OPTS, "alice", "k", "h1")
    b, created_again = store.create_job("m" * 64, "s" * 64, OPTS, "alice", "k", "h1")
    assert created and not created_again and a.id == b.id
    c, _ = store.create_job("m" * 64, "s" * 64, OPTS, "bob", "k", "h1")
    assert c.id != a.id
    with pytest.raises(IdempotencyConflict):
        store.create_job("m" * 64, "s" * 64, OPTS, "alice", "k", "h2")
    assert store.get_job(a.id) is not None
    assert store._exec("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_artifacts_named_by_digest_only(tmp_path):
    art = Artifacts(tmp_path)
    digest = art.put("models", b"abc")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert art.put("models", b"abc") == digest and art.exists("models", digest)
    assert [p.name for p in (tmp_path / "artifacts" / "models").iterdir()] == [digest]
    for bad in ("../../etc/passwd", "A" * 64, ""):
        assert not art.exists("models", bad)
        with pytest.raises(ValueError):
            art.path("models", bad)
