"""``/v1/models``: content-addressed ONNX uploads, checked before they are accepted."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from starlette.concurrency import run_in_threadpool

from server.artifacts import Artifacts, is_digest
from server.deps import ArtifactsDep, SettingsDep, StoreDep, require_multipart
from server.errors import ApiError
from server.intake import check_model, read_capped
from server.schemas import ModelSummary
from server.settings import Settings
from server.store import Store

router = APIRouter(prefix="/v1/models", tags=["models"])


async def accept_model(upload: UploadFile, settings: Settings, store: Store,
                       artifacts: Artifacts) -> dict:
    """Read, check and store an uploaded model; its summary (the upload's name is ignored)."""
    data = await read_capped(upload, settings.max_model_bytes, "model")
    if not data:
        raise ApiError(400, "the uploaded model is empty")
    digest = hashlib.sha256(data).hexdigest()
    summary = store.get_model(digest)
    if summary is None:
        summary = await run_in_threadpool(check_model, data, digest, settings)
        artifacts.put("models", data)
        store.put_model(digest, len(data), summary)
    return summary


def known_model(model_id: str, store: Store) -> dict:
    """The summary of a stored model; 404 when unknown (or not an id at all)."""
    summary = store.get_model(model_id) if is_digest(model_id) else None
    if summary is None:
        raise ApiError(404, f"no model with id {model_id!r}")
    return summary


@router.post("", status_code=201, response_model=ModelSummary,
             dependencies=[Depends(require_multipart)])
async def upload_model(file: Annotated[UploadFile, File(description="ONNX model")],
                       settings: SettingsDep, store: StoreDep,
                       artifacts: ArtifactsDep) -> dict:
    return await accept_model(file, settings, store, artifacts)


@router.get("/{model_id}", response_model=ModelSummary)
def get_model(model_id: str, store: StoreDep) -> dict:
    return known_model(model_id, store)
