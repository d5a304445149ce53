"""``/v1/models``: content-addressed ONNX uploads, checked before they are accepted."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from starlette.concurrency import run_in_threadpool

from server.artifacts import Artifacts, is_digest
from server.deps import (
    ArtifactsDep,
    Caller,
    CallerDep,
    SandboxDep,
    SettingsDep,
    StoreDep,
    require_multipart,
)
from server.errors import ApiError
from server.intake import intake_model, read_capped
from server.openapi import UPLOAD, errors
from server.sandbox import Sandbox
from server.schemas import ModelSummary
from server.settings import Settings
from server.store import Store

router = APIRouter(prefix="/v1/models", tags=["models"])


async def accept_model(upload: UploadFile, settings: Settings, store: Store,
                       artifacts: Artifacts, who: Caller, sandbox: Sandbox,
                       memory_mb: int | None = None) -> dict:
    """Read, check (in the sandbox, under ``memory_mb`` or the job memory limit) and store an
    uploaded model, owned by ``who`` (also when the same bytes were uploaded before); its
    summary (the upload's name is ignored)."""
    data = await read_capped(upload, settings.max_model_bytes, "model")
    if not data:
        raise ApiError(400, "the uploaded model is empty")
    digest = hashlib.sha256(data).hexdigest()
    summary = store.get_model(digest)
    if summary is None:
        summary = await run_in_threadpool(sandbox.run, intake_model, (data, digest, settings),
                                          "model", memory_mb)
        artifacts.put("models", data)
        store.put_model(digest, len(data), summary, who.owner)
    else:
        store.add_model_owner(digest, who.owner)
    return summary


def known_model(model_id: str, store: Store, who: Caller) -> dict:
    """The summary of a stored model ``who`` may see; 404 when unknown, not an id at all, or
    uploaded only by other callers (no hint that it exists)."""
    summary = store.get_model(model_id, who.scope) if is_digest(model_id) else None
    if summary is None:
        raise ApiError(404, f"no model with id {model_id!r}")
    return summary


@router.post("", status_code=201, response_model=ModelSummary,
             dependencies=[Depends(require_multipart)], responses=errors(*UPLOAD))
async def upload_model(file: Annotated[UploadFile, File(description="ONNX model")],
                       settings: SettingsDep, store: StoreDep, artifacts: ArtifactsDep,
                       who: CallerDep, sandbox: SandboxDep) -> dict:
    return await accept_model(file, settings, store, artifacts, who, sandbox)


@router.get("/{model_id}", response_model=ModelSummary, responses=errors(404))
def get_model(model_id: str, store: StoreDep, who: CallerDep) -> dict:
    return known_model(model_id, store, who)
