"""Typed dependencies shared by the routes (settings, store, artifacts, jobs, caller, limits)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from server.artifacts import Artifacts
from server.errors import ApiError
from server.executor import Executor
from server.metrics import Metrics
from server.sandbox import DeviceProbe, Sandbox
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


def get_sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
JobsDep = Annotated[Executor, Depends(get_jobs)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]


def get_devices(request: Request) -> DeviceProbe:
    return request.app.state.devices


DevicesDep = Annotated[DeviceProbe, Depends(get_devices)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``owner`` is the hash of the API key ("" when no keys are configured),
    stored with every job and model the caller creates. ``admin`` callers see everything."""

    owner: str
    admin: bool = False

    def sees(self, owner: str) -> bool:
        """True when this caller may see (and cancel) what ``owner`` created."""
        return self.admin or owner == self.owner

    @property
    def scope(self) -> str | None:
        """The owner to filter listings by (None: every owner)."""
        return None if self.admin else self.owner


def caller(settings: SettingsDep,
           authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The caller: the hash of its API key and its role; without configured keys every
    caller is the same anonymous one and sees everything.

    With keys configured, ``Authorization: Bearer <key>`` is required (401 otherwise).
    """
    if not settings.auth_required:
        return Caller("", admin=True)
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization:
        raise ApiError(401, "an API key is required: send 'Authorization: Bearer <key>'",
                       challenge)
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "the Authorization header must be 'Bearer <key>'", challenge)
    key = key.strip()
    if not settings.key_allowed(key):
        raise ApiError(401, "unknown API key", challenge)
    return Caller(hash_key(key), admin=settings.is_admin(key))


CallerDep = Annotated[Caller, Depends(caller)]


def rate_limit(request: Request, who: CallerDep, metrics: MetricsDep) -> None:
    """429 with ``Retry-After`` once the caller's token bucket is empty (when limits are on).

    Callers are told apart by API key, or by client address when no keys are configured.
    """
    limiter = request.app.state.limiter
    if limiter is None:
        return
    identity = who.owner or "addr:" + (request.client.host if request.client else "?")
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


FORM_FIELDS = frozenset({"model_id", "spec_text", "spec_texts", "timeout", "method", "device",
                         "memory_mb"})


async def no_empty_fields(request: Request) -> None:
    """422 for a form field sent with an empty value: the framework reads it as absent, so
    ``device=`` would silently mean the default ``auto`` (found by schemathesis)."""
    form = await request.form()
    empty = sorted({key for key, value in form.multi_items()
                    if key in FORM_FIELDS and value == ""})
    if empty:
        raise ApiError(422, f"form field(s) {', '.join(empty)} sent empty; leave a field out to "
                            "use its default")
