"""Typed dependencies shared by the routes (settings, store, artifacts, jobs, caller)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from server.artifacts import Artifacts
from server.errors import ApiError
from server.jobs import JobManager
from server.settings import Settings, hash_key
from server.store import Store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]


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
