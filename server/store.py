"""Persistent job store: SQLite in WAL mode in the data directory.

One connection guarded by a lock serves the request threads and the dispatcher thread; every
write commits before returning (``synchronous=FULL``), so an accepted job survives a crash.
Jobs move ``queued -> running -> done | failed``; ``cancelled`` from queued or running.
On open, jobs left ``running`` by a dead server are re-queued (attempts kept) unless they
already used ``max_attempts``, in which case they are failed with that reason.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    verdict TEXT,
    counterexample TEXT,
    message TEXT NOT NULL DEFAULT '',
    method_used TEXT NOT NULL DEFAULT '',
    model_id TEXT NOT NULL,
    spec_id TEXT NOT NULL,
    options TEXT NOT NULL,
    progress TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    request_hash TEXT NOT NULL DEFAULT '',
    time_s REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    summary TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
# Who may see a model: every caller that uploaded its bytes (models are content-addressed, so
# two keys uploading the same file both own it). A store made before owners existed gets one
# row per (model, owner) of its jobs when the table is created.
OWNERS_SCHEMA = """
CREATE TABLE model_owners (
    model_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (model_id, owner)
);
INSERT OR IGNORE INTO model_owners SELECT DISTINCT model_id, owner FROM jobs;
"""


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, JSON columns decoded."""

    seq: int
    id: str
    status: str
    verdict: str | None
    counterexample: dict | None
    message: str
    method_used: str
    model_id: str
    spec_id: str
    options: dict
    progress: dict | None
    attempts: int
    owner: str
    idempotency_key: str | None
    request_hash: str
    time_s: float | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        for name in ("counterexample", "options", "progress"):
            if data[name] is not None:
                data[name] = json.loads(data[name])
        return cls(**data)


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request."""


class Store:
    """The jobs and models tables of one data directory."""

    def __init__(self, data_dir: str | Path, max_attempts: int = 3):
        self.path = Path(data_dir) / "nncert.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name='model_owners'"
                                ).fetchone():
            self._db.executescript(OWNERS_SCHEMA)
        self.recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    # -- recovery -------------------------------------------------------------------------
    def recover(self) -> int:
        """Re-queue jobs left ``running`` (attempts kept); fail those out of attempts."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            failed = self._db.execute(
                "UPDATE jobs SET status='failed', verdict='error', updated_at=?, finished_at=?,"
                " message=? WHERE status='running' AND attempts>=?",
                (now, now, f"gave up after {self.max_attempts} attempts (server restarts)",
                 self.max_attempts)).rowcount
            requeued = self._db.execute(
                "UPDATE jobs SET status='queued', updated_at=?, started_at=NULL, progress=NULL"
                " WHERE status='running'", (now,)).rowcount
            self._db.execute("COMMIT")
        if requeued or failed:
            log.warning("recovery: %d running job(s) re-queued, %d failed", requeued, failed)
        return requeued

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, model_id: str, spec_id: str, options: dict, owner: str = "",
                   idempotency_key: str | None = None, request_hash: str = "") -> tuple[Job, bool]:
        """Insert a queued job; returns (job, created). With an idempotency key already used
        by ``owner``, returns the existing job (created False) or raises IdempotencyConflict
        when the earlier request differed."""
        now = time.time()
        job_id = uuid.uuid4().hex
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, status, model_id, spec_id, options, owner,"
                    " idempotency_key, request_hash, created_at, updated_at)"
                    " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, model_id, spec_id, json.dumps(options), owner, idempotency_key,
                     request_hash, now, now))
            except sqlite3.IntegrityError:
                row = self._db.execute(
                    "SELECT * FROM jobs WHERE owner=? AND idempotency_key=?",
                    (owner, idempotency_key)).fetchone()
                if row is None:
                    raise
                job = Job.from_row(row)
                if job.request_hash != request_hash:
                    raise IdempotencyConflict(idempotency_key) from None
                return job, False
        job = self.get_job(job_id)
        assert job is not None
        return job, True

    def get_job(self, job_id: str) -> Job | None:
        row = self._exec("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list_jobs(self, status: str | None = None, before_seq: int | None = None,
                  limit: int = 50, owner: str | None = None) -> list[Job]:
        """Newest first; ``before_seq`` is the cursor (the seq of the last job seen);
        ``owner``: only that caller's jobs (None: everyone's)."""
        sql, params = "SELECT * FROM jobs WHERE 1=1", []
        if owner is not None:
            sql += " AND owner=?"
            params.append(owner)
        if status:
            sql += " AND status=?"
            params.append(status)
        if before_seq is not None:
            sql += " AND seq<?"
            params.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [Job.from_row(r) for r in self._exec(sql, tuple(params)).fetchall()]

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to running (attempts + 1)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT id FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1").fetchone()
            if row is not None:
                self._db.execute(
                    "UPDATE jobs SET status='running', attempts=attempts+1, started_at=?,"
                    " updated_at=? WHERE id=?", (now, now, row["id"]))
            self._db.execute("COMMIT")
        return self.get_job(row["id"]) if row else None

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._exec("UPDATE jobs SET progress=?, updated_at=? WHERE id=? AND status='running'",
                   (json.dumps(progress, default=str), time.time(), job_id))

    def finish(self, job_id: str, status: str, verdict: str | None = None,
               counterexample: dict | None = None, message: str = "", method_used: str = "",
               time_s: float | None = None) -> bool:
        """Record the end of a running job; False when it was no longer running (cancelled)."""
        assert status in ("done", "failed")
        now = time.time()
        cur = self._exec(
            "UPDATE jobs SET status=?, verdict=?, counterexample=?, message=?, method_used=?,"
            " time_s=?, finished_at=?, updated_at=? WHERE id=? AND status='running'",
            (status, verdict, json.dumps(counterexample) if counterexample else None, message,
             method_used, time_s, now, now, job_id))
        return cur.rowcount == 1

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued or running job. Returns the status it had (None if unknown)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row and row["status"] in ("queued", "running"):
                self._db.execute(
                    "UPDATE jobs SET status='cancelled', message='cancelled by request',"
                    " finished_at=?, updated_at=? WHERE id=?", (now, now, job_id))
            self._db.execute("COMMIT")
        return row["status"] if row else None

    def count(self, status: str) -> int:
        return self._exec("SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        """Number of jobs in each status (statuses with none are left out)."""
        rows = self._exec("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {row[0]: row[1] for row in rows}

    # -- models -----------------------------------------------------------------------------
    def put_model(self, model_id: str, size: int, summary: dict, owner: str = "") -> None:
        """Record a checked model (idempotent) and ``owner`` as one of its uploaders."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO models (id, size, summary, created_at)"
                             " VALUES (?, ?, ?, ?)",
                             (model_id, size, json.dumps(summary), time.time()))
            self._db.execute("INSERT OR IGNORE INTO model_owners (model_id, owner) VALUES (?, ?)",
                             (model_id, owner))
            self._db.execute("COMMIT")

    def add_model_owner(self, model_id: str, owner: str) -> None:
        """``owner`` uploaded the bytes of an already stored model."""
        self._exec("INSERT OR IGNORE INTO model_owners (model_id, owner) VALUES (?, ?)",
                   (model_id, owner))

    def get_model(self, model_id: str, owner: str | None = None) -> dict | None:
        """A model's summary; with ``owner``, None unless that caller uploaded it."""
        if owner is None:
            row = self._exec("SELECT summary FROM models WHERE id=?", (model_id,)).fetchone()
        else:
            row = self._exec("SELECT m.summary FROM models m JOIN model_owners o"
                             " ON o.model_id = m.id WHERE m.id=? AND o.owner=?",
                             (model_id, owner)).fetchone()
        return json.loads(row["summary"]) if row else None
