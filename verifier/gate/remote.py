"""``nncert gate --server URL``: the same gate, with the verifications run by an nncert service.

The model is uploaded once (``POST /v1/models``; for the equivalence gate, the merged model
holding both models), each sample's property is submitted as a job (``POST
/v1/verifications`` with ``model_id`` and ``spec_text``), and the jobs are polled (``GET
/v1/verifications/{id}``) until each is done. Every counterexample the service returns is
re-checked here with onnxruntime before the sample counts as falsified.

Errors talking to the service (unreachable, 401, 4xx answers) raise :class:`RemoteError`, a
bad-input error (exit status 2): the gate cannot give an answer, which is not a gate failure.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verifier.errors import NncertError
from verifier.gate.data import Dataset
from verifier.gate.gate import _BY_VERDICT, GateSummary, ProgressFn, SampleOutcome, Thresholds
from verifier.gate.specs import BallOptions, input_box, robustness_vnnlib

log = logging.getLogger(__name__)

FINAL = ("done", "failed", "cancelled")


class RemoteError(NncertError):
    """The nncert service could not be used (unreachable, refused, or answered an error)."""


@dataclass(frozen=True)
class RemoteOptions:
    """Where and how to submit: service URL, API key, per-job timeout and polling."""

    url: str
    api_key: str | None = None
    timeout_per_sample: float = 60.0
    device: str = "auto"
    poll_s: float = 0.25
    wait_slack_s: float = 120.0  # beyond n * timeout, for queueing and worker start-up
    request_timeout_s: float = 60.0


class _Client:
    """A thin httpx wrapper that turns transport and HTTP errors into RemoteError."""

    def __init__(self, opts: RemoteOptions) -> None:
        try:
            import httpx
        except ImportError:
            raise RemoteError("--server needs httpx (pip install httpx, or the 'server' "
                              "extra)") from None
        headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
        self.httpx = httpx
        self.url = opts.url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers,
                                 timeout=opts.request_timeout_s)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, expect: tuple[int, ...], **kwargs) -> dict:
        last: Exception | None = None
        for attempt in range(3):  # transport errors only; job submissions are idempotent
            try:
                r = self.http.request(method, path, **kwargs)
                break
            except self.httpx.TransportError as exc:
                last = exc
                time.sleep(0.3 * (attempt + 1))
        else:
            raise RemoteError(f"cannot reach the nncert service at {self.url}: {last}")
        if r.status_code not in expect:
            raise RemoteError(f"the nncert service answered {method} {path} with "
                              f"{r.status_code}: {_error_text(r)}")
        return r.json()


def _error_text(r) -> str:
    try:
        return str(r.json()["error"]["message"])
    except Exception:  # noqa: BLE001 - not our error body: show the start of the text
        return r.text[:200] or r.reason_phrase


def upload_model(client: _Client, data: bytes, filename: str) -> str:
    """POST the ONNX bytes once; their id (the service's content hash)."""
    body = client.call("POST", "/v1/models", (200, 201),
                       files={"file": (filename, data, "application/octet-stream")})
    return body["id"]


# Maps (sample index, finished job) to the sample's outcome.
OutcomeFn = Callable[[int, dict], SampleOutcome]


def run_gate_remote(model, dataset: Dataset, ball: BallOptions, thresholds: Thresholds,
                    opts: RemoteOptions, data_label: str = "",
                    progress: ProgressFn | None = None) -> GateSummary:
    """Verify every sample on the service; the summary, as :func:`run_gate` returns it.

    ``model``: the loaded ``ImportedModel`` (for the output count and the local re-check of
    counterexamples); its ``path`` is the file uploaded.
    """
    from verifier.gate.gate import output_count

    n_out = output_count(model)
    summary = GateSummary(model.path, data_label, ball, thresholds)
    texts = [_spec_text(dataset, i, ball, n_out) for i in range(len(dataset))]

    def outcome(i: int, job: dict) -> SampleOutcome:
        return _outcome(dataset, i, job, lambda x: _recheck(model, dataset, ball, n_out, i, x))

    start = time.monotonic()
    data = Path(model.path).read_bytes()
    summary.samples.extend(run_jobs(opts, data, Path(model.path).name, texts, dataset,
                                    outcome, progress))
    summary.total_time_s = time.monotonic() - start
    return summary


def run_equivalence_remote(problem, dataset: Dataset, ball: BallOptions,
                           thresholds: Thresholds, opts: RemoteOptions, data_label: str = "",
                           progress: ProgressFn | None = None) -> GateSummary:
    """The equivalence gate on the service: the merged model (both models on one input) is
    uploaded as an ordinary model and each sample's property submitted as an ordinary job;
    counterexamples are validated here on the merged model and on the two models run on
    their own (:func:`verifier.gate.equiv_run.falsified_outcome`)."""
    from verifier.gate.equiv_run import falsified_outcome

    summary = GateSummary(problem.model_path, data_label, ball, thresholds,
                          equivalence=problem.prop)
    texts = [problem.vnnlib(dataset.x[i], ball, f"nncert gate --reference: {dataset.names[i]}, "
                            f"eps {ball.eps!r}") for i in range(len(dataset))]

    def recheck(i: int, x: np.ndarray):
        from verifier.validate import validate_counterexample

        spec = problem.spec(dataset.x[i], ball, dataset.names[i])
        try:
            return validate_counterexample(problem.merged, spec, x)
        except ValueError:
            return None

    def outcome(i: int, job: dict) -> SampleOutcome:
        first = _outcome(dataset, i, job, lambda x: recheck(i, x))
        if first.outcome != "falsified":
            return first
        return falsified_outcome(problem, i, first.name, first.label, first.cex_x,
                                 first.time_s, first.method, first.message)

    start = time.monotonic()
    summary.samples.extend(run_jobs(opts, problem.merged_bytes, "merged.onnx", texts, dataset,
                                    outcome, progress))
    summary.total_time_s = time.monotonic() - start
    return summary


def run_jobs(opts: RemoteOptions, model_bytes: bytes, filename: str, spec_texts: list[str],
             dataset: Dataset, outcome: OutcomeFn,
             progress: ProgressFn | None) -> list[SampleOutcome]:
    """Upload the model, submit one job per spec text, wait; outcomes in sample order."""
    client = _Client(opts)
    try:
        model_id = upload_model(client, model_bytes, filename)
        log.info("model uploaded as %s", model_id)
        run_key = uuid.uuid4().hex
        jobs = [_submit(client, model_id, text, opts, f"nncert-gate-{run_key}-{i}")
                for i, text in enumerate(spec_texts)]
        return _poll(client, dataset, jobs, opts, outcome, progress)
    finally:
        client.close()


def _spec_text(dataset: Dataset, i: int, ball: BallOptions, n_out: int) -> str:
    lower, upper = input_box(dataset.x[i], ball)
    return robustness_vnnlib(lower, upper, int(dataset.y[i]), n_out,
                             comment=f"nncert gate: {dataset.names[i]}, eps {ball.eps!r}")


def _submit(client: _Client, model_id: str, spec: str, opts: RemoteOptions, key: str) -> str:
    body = client.call("POST", "/v1/verifications", (200, 201, 202),
                       data={"model_id": model_id, "spec_text": spec,
                             "timeout": repr(float(opts.timeout_per_sample)),
                             "device": opts.device},
                       headers={"Idempotency-Key": key})
    return body["id"]


def _poll(client: _Client, dataset: Dataset, jobs: list[str], opts: RemoteOptions,
          outcome: OutcomeFn, progress) -> list[SampleOutcome]:
    """Wait for every job; outcomes in sample order. Jobs still open at the wait limit are
    cancelled and count as ``timeout``."""
    results: dict[int, SampleOutcome] = {}
    deadline = time.monotonic() + len(jobs) * opts.timeout_per_sample + opts.wait_slack_s
    delay = opts.poll_s
    while len(results) < len(jobs):
        for i, job_id in enumerate(jobs):
            if i in results:
                continue
            job = client.call("GET", f"/v1/verifications/{job_id}", (200,))
            if job["status"] in FINAL:
                results[i] = outcome(i, job)
                if progress is not None:
                    progress(len(results), len(jobs), results[i])
        if len(results) == len(jobs):
            break
        if time.monotonic() > deadline:
            for i, job_id in enumerate(jobs):
                if i not in results:
                    client.call("DELETE", f"/v1/verifications/{job_id}", (200, 404, 409))
                    results[i] = SampleOutcome(i, dataset.names[i], int(dataset.y[i]),
                                               "timeout", 0.0, "remote",
                                               f"job {job_id} not finished in time; cancelled")
            break
        time.sleep(delay)
        delay = min(2.0, delay * 1.5)
    return [results[i] for i in range(len(jobs))]


def _outcome(dataset: Dataset, i: int, job: dict, recheck) -> SampleOutcome:
    """Map a finished job to an outcome; a counterexample must validate here as well
    (``recheck(x)``: the validated Counterexample or None)."""
    name, label = dataset.names[i], int(dataset.y[i])
    t, method = float(job.get("time_s") or 0.0), job.get("method_used") or "remote"
    message = job.get("message") or ""
    if job["status"] != "done":
        return SampleOutcome(i, name, label, "error", t, method,
                             f"job {job['id']} {job['status']}: {message}".rstrip(": "))
    outcome = _BY_VERDICT.get(job.get("verdict") or "error", "error")
    if outcome != "falsified":
        return SampleOutcome(i, name, label, outcome, t, method, message)
    cex = job.get("counterexample")
    checked = None if not cex or "x" not in cex else recheck(
        np.asarray(cex["x"], dtype=np.float64))
    if checked is None:
        return SampleOutcome(i, name, label, "error", t, method,
                             f"job {job['id']}: the service's counterexample does not "
                             "validate locally")
    return SampleOutcome(i, name, label, "falsified", t, method, message,
                         np.asarray(checked.x, dtype=np.float64),
                         np.asarray(checked.y, dtype=np.float64))


def _recheck(model, dataset, ball, n_out, i, x: np.ndarray):
    from verifier.gate.radius import ball_spec
    from verifier.validate import validate_counterexample

    spec = ball_spec(dataset.x[i], int(dataset.y[i]), n_out, ball, dataset.names[i])
    try:
        return validate_counterexample(model, spec, x)
    except ValueError:
        return None
