"""Request and response models of the HTTP API (the verifier core never sees these)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from server.store import Job
from verifier.config import Device, Method  # defined once there; routes import them from here

Status = Literal["queued", "running", "done", "failed", "cancelled"]


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"status": 404, "message": "..."}}``."""

    class Detail(BaseModel):
        status: int
        message: str
        details: list | None = None

    error: Detail


class TensorSummary(BaseModel):
    name: str
    shape: list[int] = Field(description="-1 where the dimension is symbolic (see the model's "
                                         "symbolic_axis)")


class ModelSummary(BaseModel):
    id: str = Field(description="SHA-256 of the ONNX bytes")
    size_bytes: int
    opset: int
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    ops: dict[str, int] = Field(description="ONNX op types and how many nodes use each")
    parameters: int = Field(description="number of values in the initializers")
    attack_only: str | None = Field(
        None, description="set when the importer refused the model but onnxruntime runs it: "
                          "why; its jobs are attacked (sat or unknown), never bounded")
    symbolic_axis: str | None = Field(
        None, description="the one symbolic non-batch input dimension (a dynamic sequence "
                          "length): each spec's input count sets it, and the model is "
                          "imported and checked at that size when a spec is submitted")


class JobOptions(BaseModel):
    timeout: float = Field(gt=0)
    method: Method = "auto"
    device: Device = "auto"
    memory_mb: int | None = Field(None, ge=1, description="memory limit of the job (MiB)")


class Counterexample(BaseModel):
    x: list[float]
    y: list[float]


class JobOut(BaseModel):
    id: str
    status: Status
    verdict: str | None
    counterexample: Counterexample | None
    message: str
    method_used: str
    model_id: str
    spec_id: str
    options: JobOptions
    progress: dict | None
    attempts: int
    time_s: float | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job) -> JobOut:
        def ts(value: float | None) -> datetime | None:
            return None if value is None else datetime.fromtimestamp(value, UTC)

        base = f"/v1/verifications/{job.id}"
        return cls(
            id=job.id, status=job.status, verdict=job.verdict,
            counterexample=job.counterexample, message=job.message,
            method_used=job.method_used, model_id=job.model_id, spec_id=job.spec_id,
            options=JobOptions(**job.options), progress=job.progress, attempts=job.attempts,
            time_s=job.time_s, created_at=ts(job.created_at), updated_at=ts(job.updated_at),
            started_at=ts(job.started_at), finished_at=ts(job.finished_at),
            links={"self": base, "results": base + "/results", "events": base + "/events"},
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class JobBatch(BaseModel):
    items: list[JobOut] = Field(description="one job per spec, in the order sent")


class OpsOut(BaseModel):
    onnx_operators: list[str]


class Health(BaseModel):
    status: str
    workers: int | None = None
    queued: int | None = None
    running: int | None = None
