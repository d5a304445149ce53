"""``/v1/ops``, ``/healthz`` (the process answers), ``/readyz`` (store and workers up) and
``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from server.deps import JobsDep, MetricsDep, SettingsDep, StoreDep, caller
from server.metrics import CONTENT_TYPE
from server.openapi import errors
from server.schemas import Health, OpsOut

router = APIRouter(tags=["meta"])


@router.get("/v1/ops", response_model=OpsOut, dependencies=[Depends(caller)],
            responses=errors(401))
def list_ops() -> OpsOut:
    from verifier.onnx_import.registry import supported_ops

    return OpsOut(onnx_operators=list(supported_ops()))


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(settings: SettingsDep, store: StoreDep, jobs: JobsDep):
    try:
        queued, running = store.count("queued"), store.count("running")
    except Exception:  # noqa: BLE001 - any store failure means not ready
        return JSONResponse(Health(status="store unavailable").model_dump(), status_code=503)
    alive = jobs.alive()
    ready = settings.workers == 0 or alive > 0
    body = Health(status="ready" if ready else "no worker running", workers=alive,
                  queued=queued, running=running)
    return body if ready else JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(caller)],
            responses={200: {"content": {CONTENT_TYPE: {}}}, **errors(401)})
def metrics(settings: SettingsDep, store: StoreDep, jobs: JobsDep,
            counters: MetricsDep) -> PlainTextResponse:
    """Jobs by status, queue length, workers, job durations (histogram), 429s."""
    text = counters.render(store.counts(), jobs.alive(), settings.workers)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
