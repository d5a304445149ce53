"""Service settings: one explicit object handed to ``create_app`` (no globals, no import-time I/O).

API keys are never kept in clear: :meth:`Settings.with_api_keys` stores their SHA-256 digests
and :meth:`Settings.key_allowed` compares digests in constant time. Keys are random tokens
chosen by the operator, so a fast unsalted hash is adequate (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIB = 1 << 20
DEFAULT_RUNNER = "server.worker:run_verification"


def hash_key(key: str) -> str:
    """The stored form of an API key (hex SHA-256)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Settings(BaseModel):
    """Everything the service needs; presets are classmethods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # 0 workers: accept and queue jobs, run none (another process may serve the queue).
    # With the Ray executor: how many jobs are handed to the cluster at once.
    workers: int = Field(1, ge=0, le=256)
    # Where jobs run: "local" worker processes, or Ray tasks on the cluster at ray_address
    # ("HOST:PORT" of a head's GCS, "ray://HOST:10001" for Ray Client, "auto", or None/"local"
    # for a private single-machine Ray instance).
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_namespace: str = "nncert"
    # Jobs a Ray worker process runs before Ray replaces it (0: no limit; GPU jobs always get a
    # fresh process). Reuse saves a process start and the torch import per job (20 tiny jobs:
    # 12 s instead of 122 s on 2 loaded cores); the memory limit counts the worker's whole RSS,
    # so 1 gives strict isolation from what an earlier job left behind.
    ray_max_calls: int = Field(0, ge=0)
    # Per-job memory limit (resident set size, MiB; 0 = none): the default and the most a job
    # may ask for with the memory_mb option.
    job_memory_mb: int = Field(4096, ge=0)
    max_job_memory_mb: int = Field(16384, ge=0)
    # The least a job may ask for with the memory_mb option: a worker holds about 300 MiB
    # once torch is loaded, so a job under this could only fail with "memory limit
    # exceeded" (0: no floor; the operator's job_memory_mb is not checked against it).
    min_job_memory_mb: int = Field(384, ge=0)
    # A local worker that holds more than this after a job (freed memory the allocator keeps)
    # is replaced by a fresh process, so the next job starts from a clean slate (0: never).
    worker_recycle_mb: int = Field(1024, ge=0)
    # Limits (bytes, counts, seconds).
    max_request_bytes: int = Field(256 * MIB, gt=0)
    max_model_bytes: int = Field(128 * MIB, gt=0)
    max_spec_bytes: int = Field(64 * MIB, gt=0)
    max_spec_terms: int = Field(100_000, gt=0)
    max_nodes: int = Field(100_000, gt=0)
    max_parameters: int = Field(200_000_000, gt=0)
    max_opset: int = Field(23, gt=0)
    max_tensor_elements: int = Field(1 << 26, gt=0)  # per tensor (model and spec declarations)
    # Floats in a spec's input boxes once its 'or's are multiplied out (regions x inputs x 2),
    # counted before they are built: 65,536 boxes of 1,500 inputs (196M) are refused.
    max_spec_values: int = Field(1 << 24, gt=0)
    # Intake checks (model import with constant folding, spec parsing) run in child processes
    # under the job memory limit: how many at once, and how long one may take.
    intake_processes: int = Field(2, ge=1, le=64)
    intake_timeout_s: float = Field(120.0, gt=0)
    default_timeout: float = Field(300.0, gt=0)
    max_timeout: float = Field(3600.0, gt=0)
    kill_grace_s: float = Field(30.0, ge=0)  # past timeout + grace the worker is killed
    max_attempts: int = Field(3, ge=1)  # re-queues after restarts before a job is failed
    api_key_hashes: tuple[str, ...] = ()
    # Keys with the admin role: they see and cancel every caller's jobs and models (each
    # other key sees only what it created). Admin keys are valid API keys by themselves.
    admin_key_hashes: tuple[str, ...] = ()
    # Per-caller token bucket: requests a second (0 turns limits off) and burst size.
    rate_limit_per_s: float = Field(0.0, ge=0)
    rate_limit_burst: int = Field(60, ge=1)
    max_batch: int = Field(32, ge=1, le=1000)  # specs in one batch submission
    events_poll_s: float = Field(0.5, gt=0)  # how often an event stream looks at its job
    events_keepalive_s: float = Field(15.0, gt=0)
    # "module:function" run in the worker process for each job (tests swap it).
    job_runner: str = DEFAULT_RUNNER
    # Differential check of each imported model against onnxruntime before verifying. Off
    # skips it (each job logs a warning): a wrong import then goes unnoticed.
    check_model: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_timeout > self.max_timeout:
            raise ValueError(f"default_timeout {self.default_timeout} is above max_timeout "
                             f"{self.max_timeout}")
        if self.max_job_memory_mb and not 0 < self.job_memory_mb <= self.max_job_memory_mb:
            raise ValueError(f"job_memory_mb {self.job_memory_mb} must be between 1 and "
                             f"max_job_memory_mb {self.max_job_memory_mb} (0 and 0: no limits)")
        return self

    @property
    def auth_required(self) -> bool:
        return bool(self.api_key_hashes or self.admin_key_hashes)

    def key_allowed(self, key: str) -> bool:
        """True when ``key`` is one of the configured API keys (constant-time comparison)."""
        digest = hash_key(key)
        return self.is_admin(key) or any(hmac.compare_digest(digest, h)
                                         for h in self.api_key_hashes)

    def is_admin(self, key: str) -> bool:
        """True when ``key`` has the admin role (constant-time comparison)."""
        digest = hash_key(key)
        return any(hmac.compare_digest(digest, h) for h in self.admin_key_hashes)

    @staticmethod
    def hashed(keys: Iterable[str]) -> tuple[str, ...]:
        return tuple(hash_key(k.strip()) for k in keys if k.strip())

    @classmethod
    def with_api_keys(cls, keys: Iterable[str], admin_keys: Iterable[str] = (),
                      **fields) -> Settings:
        """Settings whose API keys are ``keys`` and admin keys ``admin_keys`` (hashed here;
        the clear keys are not kept)."""
        return cls(api_key_hashes=cls.hashed(keys), admin_key_hashes=cls.hashed(admin_keys),
                   **fields)

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Settings from ``NNCERT_DATA_DIR``, ``NNCERT_WORKERS``, ``NNCERT_RATE_LIMIT``,
        ``NNCERT_RATE_BURST``, ``NNCERT_EXECUTOR``, ``NNCERT_RAY_ADDRESS``,
        ``NNCERT_JOB_MEMORY_MB``, ``NNCERT_MAX_JOB_MEMORY_MB``, ``NNCERT_RAY_MAX_CALLS``,
        ``NNCERT_CHECK_MODEL`` (0/false skips the model check), ``NNCERT_API_KEYS``
        (comma-separated), ``NNCERT_API_KEYS_FILE`` (one key a line) and
        ``NNCERT_ADMIN_KEYS`` (comma-separated keys with the admin role); overrides win."""
        fields: dict = {"data_dir": Path(os.environ.get("NNCERT_DATA_DIR", "nncert-data"))}
        for var, name in (("NNCERT_WORKERS", "workers"), ("NNCERT_RATE_LIMIT", "rate_limit_per_s"),
                          ("NNCERT_RATE_BURST", "rate_limit_burst"),
                          ("NNCERT_EXECUTOR", "executor"), ("NNCERT_RAY_ADDRESS", "ray_address"),
                          ("NNCERT_JOB_MEMORY_MB", "job_memory_mb"),
                          ("NNCERT_MAX_JOB_MEMORY_MB", "max_job_memory_mb"),
                          ("NNCERT_RAY_MAX_CALLS", "ray_max_calls"),
                          ("NNCERT_CHECK_MODEL", "check_model")):
            if var in os.environ:
                fields[name] = os.environ[var]
        keys = [k for k in os.environ.get("NNCERT_API_KEYS", "").split(",") if k.strip()]
        key_file = os.environ.get("NNCERT_API_KEYS_FILE")
        if key_file:
            keys += Path(key_file).read_text().splitlines()
        if keys:
            fields["api_key_hashes"] = cls.hashed(keys)
        admins = [k for k in os.environ.get("NNCERT_ADMIN_KEYS", "").split(",") if k.strip()]
        if admins:
            fields["admin_key_hashes"] = cls.hashed(admins)
        fields.update(overrides)
        return cls(**fields)
