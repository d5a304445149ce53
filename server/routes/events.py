"""``GET /v1/verifications/{id}/events``: the job's progress as server-sent events.

Each change of the stored job (status, progress from the worker, verdict) is sent as an
``update`` event whose data is the job's JSON (as ``GET /v1/verifications/{id}`` answers);
the stream ends with one ``final`` event once the job is done, failed or cancelled. Comments
keep idle connections open. The stream reads the store, so it works for any worker backend
and across server restarts (a client reconnects and gets the current state first).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.deps import CallerDep, SettingsDep, StoreDep
from server.openapi import errors
from server.routes.verifications import job_or_404
from server.schemas import JobOut
from server.settings import Settings
from server.store import FINAL, Job, Store

router = APIRouter(prefix="/v1/verifications", tags=["verifications"])

MEDIA_TYPE = "text/event-stream"


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event (``data`` must be a single line, as JSON is)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _state(job: Job) -> tuple:
    return job.status, job.updated_at, job.attempts


async def job_events(job: Job, store: Store, settings: Settings,
                     request: Request | None = None) -> AsyncIterator[str]:
    """Events for ``job`` until it is final (or the client goes away)."""
    seen, n = None, 0
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        if seen != _state(job):
            seen, n = _state(job), n + 1
            final = job.status in FINAL
            body = JobOut.of(job).model_dump_json()
            yield sse("final" if final else "update", body, n)
            last_sent = time.monotonic()
            if final:
                return
        elif time.monotonic() - last_sent >= settings.events_keepalive_s:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(settings.events_poll_s)
        if request is not None and await request.is_disconnected():
            return
        latest = await run_in_threadpool(store.get_job, job.id)
        if latest is None:  # cannot happen today (jobs are never deleted); end cleanly
            yield sse("final", json.dumps({"id": job.id, "status": "gone"}), n + 1)
            return
        job = latest


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {MEDIA_TYPE: {}},
                             "description": "update events, then one final event"},
                       **errors(404)})
async def events(job_id: str, request: Request, store: StoreDep, settings: SettingsDep,
                 who: CallerDep) -> StreamingResponse:
    job = await run_in_threadpool(job_or_404, job_id, store, who)
    return StreamingResponse(job_events(job, store, settings, request), media_type=MEDIA_TYPE,
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
