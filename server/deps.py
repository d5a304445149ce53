"""Typed dependencies shared by the routes (settings, store, artifacts, jobs, caller, limits)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Header, Request

from server.artifacts import Artifacts
from server.errors import ApiError
from server.executor import Executor
from server.metrics import Metrics
from server.settings import Settings, hash_key
from server.store import Store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


def get_jobs(request: Request) -> Executor:
    return request.app.state.jobs


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
JobsDep = Annotated[Executor, Depends(get_jobs)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def caller(settings: SettingsDep,
           authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's identity: the hash of its API key, or "" when no keys are configured.

    With keys configured, ``Authorization: Bearer <key>`` is required (401 otherwise).
    """
    if not settings.auth_required:
        return ""
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization:
        raise ApiError(401, "an API key is required: send 'Authorization: Bearer <key>'",
                       challenge)
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "the Authorization header must be 'Bearer <key>'", challenge)
    if not settings.key_allowed(key.strip()):
        raise ApiError(401, "unknown API key", challenge)
    return hash_key(key.strip())


CallerDep = Annotated[str, Depends(caller)]


def rate_limit(request: Request, identity: CallerDep, metrics: MetricsDep) -> None:
    """429 with ``Retry-After`` once the caller's token bucket is empty (when limits are on).

    Callers are told apart by API key, or by client address when no keys are configured.
    """
    limiter = request.app.state.limiter
    if limiter is None:
        return
    if not identity:
        identity = "addr:" + (request.client.host if request.client else "?")
    wait = limiter.take(identity)
    if wait > 0:
        metrics.request_limited()
        seconds = max(1, math.ceil(wait))
        raise ApiError(429, f"rate limit exceeded: retry in {seconds} s",
                       {"Retry-After": str(seconds)})


def require_multipart(request: Request) -> None:
    """415 for uploads that are not ``multipart/form-data``."""
    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise ApiError(415, f"expected a multipart/form-data upload, got {kind or 'no'} "
                            "content type")


def require_form(request: Request) -> None:
    """415 unless the body is a form (multipart, or urlencoded when it carries no file)."""
    kind = request.headers.get("content-type", "").lower()
    if not kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(415, f"expected a multipart/form-data form, got {kind or 'no'} "
                            "content type")
