"""``/v1/verifications``: submit (one spec or a batch), read, list, cancel jobs and fetch
VNN-COMP results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, Response, UploadFile
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from server.artifacts import Artifacts
from server.deps import (
    ArtifactsDep,
    Caller,
    CallerDep,
    DevicesDep,
    JobsDep,
    MetricsDep,
    SandboxDep,
    SettingsDep,
    StoreDep,
    no_empty_fields,
    require_form,
)
from server.errors import ApiError
from server.intake import intake_spec, read_capped
from server.openapi import UPLOAD, errors
from server.routes.models import accept_model, known_model
from server.sandbox import DeviceProbe, Sandbox
from server.schemas import Device, JobBatch, JobOptions, JobOut, JobPage, Method, Status
from server.settings import Settings
from server.store import IdempotencyConflict, Job, Store

router = APIRouter(prefix="/v1/verifications", tags=["verifications"])
FORM_CHECKS = [Depends(require_form), Depends(no_empty_fields)]


def job_or_404(job_id: str, store: Store, who: Caller) -> Job:
    """The job ``who`` may see; 404 when it does not exist or belongs to another caller
    (the same answer, so that a job's existence does not leak to other keys)."""
    job = store.get_job(job_id)
    if job is None or not who.sees(job.owner):
        raise ApiError(404, f"no verification job with id {job_id!r}")
    return job


def checked_options(timeout: float | None, method: str, device: str, memory_mb: int | None,
                    settings: Settings) -> JobOptions:
    """The job's options with the server's defaults filled in; 422 past the server's limits."""
    limit = timeout if timeout is not None else settings.default_timeout
    if limit > settings.max_timeout:
        raise ApiError(422, f"timeout {limit} s is above the limit of {settings.max_timeout} s")
    memory = memory_mb if memory_mb is not None else settings.job_memory_mb
    if settings.max_job_memory_mb and memory > settings.max_job_memory_mb:
        raise ApiError(422, f"memory_mb {memory} MiB is above the limit of "
                            f"{settings.max_job_memory_mb} MiB")
    if memory_mb is not None and memory_mb < settings.min_job_memory_mb:
        raise ApiError(422, f"memory_mb {memory} MiB is below the {settings.min_job_memory_mb} "
                            "MiB a verification needs (the worker alone holds about 300 MiB)")
    return JobOptions(timeout=limit, method=method, device=device, memory_mb=memory or None)


@dataclass(frozen=True)
class Intake:
    """What checking one submission needs: the services, the caller, and the job's memory
    limit (the intake checks run in the sandbox under it)."""

    settings: Settings
    store: Store
    artifacts: Artifacts
    sandbox: Sandbox
    who: Caller
    memory_mb: int | None


async def check_device(device: str, settings: Settings, probe: DeviceProbe) -> None:
    """422 for ``device=cuda`` when the local workers have no CUDA device (the job would fail
    at once). Ray clusters are not probed: their GPUs live on other machines."""
    if device != "cuda" or settings.executor != "local":
        return
    if not await run_in_threadpool(probe.cuda):
        raise ApiError(422, "device 'cuda' was requested but this server has no CUDA device; "
                            "use device 'cpu' or 'auto'")


async def model_summary(model: UploadFile | None, model_id: str | None, intake: Intake) -> dict:
    """The summary of the uploaded model or of ``model_id`` (exactly one must be given)."""
    if (model is None) == (model_id is None):
        raise ApiError(422, "send exactly one of 'model' (a file) and 'model_id'")
    if model is not None:
        return await accept_model(model, intake.settings, intake.store, intake.artifacts,
                                  intake.who, intake.sandbox, intake.memory_mb)
    return known_model(model_id, intake.store, intake.who)


async def accepted_spec(raw: bytes, summary: dict, intake: Intake, what: str = "spec") -> str:
    """Decode, parse and check a spec against the model and store it (in the sandbox); its
    id."""
    return await run_in_threadpool(intake.sandbox.run, intake_spec,
                                   (raw, summary, intake.settings, what), what, intake.memory_mb)


def enqueue(store: Store, summary: dict, spec_id: str, options: JobOptions, who: Caller,
            idempotency_key: str | None) -> tuple[Job, bool]:
    """Create the job (or find the one this idempotency key made); 409 on a key reused for a
    different request."""
    request_hash = hashlib.sha256(json.dumps(
        [summary["id"], spec_id, options.model_dump()], sort_keys=True).encode()).hexdigest()
    try:
        return store.create_job(summary["id"], spec_id, options.model_dump(), who.owner,
                                idempotency_key, request_hash)
    except IdempotencyConflict:
        raise ApiError(409, "this Idempotency-Key was already used for a different "
                            "request") from None


@router.post("", status_code=202, response_model=JobOut,
             dependencies=FORM_CHECKS, responses=errors(*UPLOAD, 404, 409))
async def submit(
    response: Response, settings: SettingsDep, store: StoreDep, artifacts: ArtifactsDep,
    jobs: JobsDep, metrics: MetricsDep, who: CallerDep, sandbox: SandboxDep,
    devices: DevicesDep,
    model: Annotated[UploadFile | None, File(description="ONNX model")] = None,
    model_id: Annotated[str | None, Form(description="id of an uploaded model")] = None,
    spec: Annotated[UploadFile | None, File(description="VNN-LIB file (.gz allowed)")] = None,
    spec_text_field: Annotated[str | None, Form(alias="spec_text")] = None,
    timeout: Annotated[float | None, Form(gt=0)] = None,
    method: Annotated[Method, Form()] = "auto",
    device: Annotated[Device, Form()] = "auto",
    memory_mb: Annotated[int | None, Form(ge=1, description="memory limit (MiB)")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    if (spec is None) == (spec_text_field is None):
        raise ApiError(422, "send exactly one of 'spec' (a file) and 'spec_text'")
    options = checked_options(timeout, method, device, memory_mb, settings)
    await check_device(device, settings, devices)
    intake = Intake(settings, store, artifacts, sandbox, who, options.memory_mb or 0)
    summary = await model_summary(model, model_id, intake)
    if spec is not None:
        raw = await read_capped(spec, settings.max_spec_bytes, "spec")
    else:
        raw = spec_text_field.encode("utf-8")
    spec_id = await accepted_spec(raw, summary, intake)
    job, created = enqueue(store, summary, spec_id, options, who, idempotency_key)
    if created:
        metrics.job_submitted()
        jobs.notify()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/verifications/{job.id}"
    return JobOut.of(job)


@router.post("/batch", status_code=202, response_model=JobBatch,
             dependencies=FORM_CHECKS, responses=errors(*UPLOAD, 404, 409))
async def submit_batch(
    settings: SettingsDep, store: StoreDep, artifacts: ArtifactsDep, jobs: JobsDep,
    metrics: MetricsDep, who: CallerDep, sandbox: SandboxDep, devices: DevicesDep,
    model: Annotated[UploadFile | None, File(description="ONNX model")] = None,
    model_id: Annotated[str | None, Form(description="id of an uploaded model")] = None,
    specs: Annotated[list[UploadFile] | None,
                     File(description="VNN-LIB files (.gz allowed)")] = None,
    spec_texts: Annotated[list[str] | None, Form(description="VNN-LIB texts")] = None,
    timeout: Annotated[float | None, Form(gt=0)] = None,
    method: Annotated[Method, Form()] = "auto",
    device: Annotated[Device, Form()] = "auto",
    memory_mb: Annotated[int | None, Form(ge=1, description="memory limit (MiB)")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobBatch:
    """One job per spec, all on the same model and options. Every spec is checked before any
    job is created, so a batch is accepted whole or not at all. With an ``Idempotency-Key``,
    spec number i uses the key ``KEY#i``."""
    uploads, texts = specs or [], spec_texts or []
    count = len(uploads) + len(texts)
    if count == 0:
        raise ApiError(422, "send at least one spec ('specs' files or 'spec_texts' fields)")
    if count > settings.max_batch:
        raise ApiError(422, f"{count} specs in one batch; the limit is {settings.max_batch}")
    options = checked_options(timeout, method, device, memory_mb, settings)
    await check_device(device, settings, devices)
    intake = Intake(settings, store, artifacts, sandbox, who, options.memory_mb or 0)
    summary = await model_summary(model, model_id, intake)
    raws = [await read_capped(u, settings.max_spec_bytes, f"spec {i}")
            for i, u in enumerate(uploads)] + [t.encode("utf-8") for t in texts]
    spec_ids = [await accepted_spec(raw, summary, intake, f"spec {i}")
                for i, raw in enumerate(raws)]
    made = [enqueue(store, summary, spec_id, options, who,
                    f"{idempotency_key}#{i}" if idempotency_key else None)
            for i, spec_id in enumerate(spec_ids)]
    created = sum(1 for _, new in made if new)
    if created:
        metrics.job_submitted(created)
        jobs.notify()
    return JobBatch(items=[JobOut.of(job) for job, _ in made])


@router.get("", response_model=JobPage)
def list_jobs(store: StoreDep, who: CallerDep,
              status: Annotated[Status | None, Query()] = None,
              cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JobPage:
    found = store.list_jobs(status, int(cursor) if cursor else None, limit + 1, who.scope)
    page = found[:limit]
    next_cursor = str(page[-1].seq) if len(found) > limit else None
    return JobPage(items=[JobOut.of(j) for j in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=errors(404))
def get_job(job_id: str, store: StoreDep, who: CallerDep) -> JobOut:
    return JobOut.of(job_or_404(job_id, store, who))


@router.delete("/{job_id}", response_model=JobOut, responses=errors(404, 409))
def cancel_job(job_id: str, store: StoreDep, jobs: JobsDep, who: CallerDep) -> JobOut:
    job_or_404(job_id, store, who)
    before = store.cancel(job_id)
    if before is None:
        raise ApiError(404, f"no verification job with id {job_id!r}")
    if before not in ("queued", "running"):
        raise ApiError(409, f"job {job_id} is already {before}; only queued or running jobs "
                            "can be cancelled")
    if before == "running":
        jobs.cancel(job_id)
    return JobOut.of(job_or_404(job_id, store, who))


@router.get("/{job_id}/results", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}, **errors(404, 409)})
def results(job_id: str, store: StoreDep, who: CallerDep) -> PlainTextResponse:
    """The VNN-COMP results file: the verdict line, then the counterexample after ``sat``."""
    from types import SimpleNamespace

    from verifier.cli.output import vnncomp_result_text

    job = job_or_404(job_id, store, who)
    if job.status == "failed":
        return PlainTextResponse("error\n")
    if job.status != "done":
        raise ApiError(409, f"job {job_id} is {job.status}; results exist once it is done")
    cex = SimpleNamespace(**job.counterexample) if job.counterexample else None
    return PlainTextResponse(vnncomp_result_text(job.verdict or "unknown", cex))
