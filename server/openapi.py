"""The OpenAPI document as the API behaves: every status a route answers, with the error
schema, and request bodies that admit only what the routes accept where a schema can say it.

Routes declare their error statuses with :func:`errors`; :func:`install_openapi` then tightens
the generated multipart bodies with the server's limits (timeouts, memory, batch size, model
ids) and the "exactly one of" rules the routes enforce, and drops the ``null`` alternatives
FastAPI writes for optional form fields (a form field cannot be null: it is absent).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.schemas import ErrorBody
from server.settings import Settings

WHY = {
    400: "malformed upload (not ONNX, corrupt gzip, not UTF-8, unparsable form)",
    401: "API key missing or unknown (when keys are configured)",
    404: "no such resource, or it belongs to another API key",
    409: "conflict with the resource's state (or a reused Idempotency-Key)",
    413: "request, model or spec above the size limits",
    415: "wrong content type (a form is expected)",
    422: "invalid parameters, or a model or spec the verifier refuses (the message says why)",
    429: "rate limit exceeded (Retry-After says when to come back)",
    503: "not ready",
}
GUARDED = (401, 422, 429)
UPLOAD = (400, 413, 415)
MODEL_ID = r"^[0-9a-f]{64}$"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``codes``, each with the error schema."""
    return {code: {"model": ErrorBody, "description": WHY[code]} for code in codes}


def _drop_null(schema: dict) -> dict:
    """``anyOf: [X, null]`` -> X (keeping title and description)."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**kept[0], **rest}


def _exactly_one(*names: str) -> dict:
    return {"oneOf": [{"required": [n]} for n in names]}


def _tighten_job_form(schema: dict, settings: Settings, batch: bool) -> None:
    """The limits and the "exactly one of" rules of the submit routes."""
    props = schema["properties"] = {k: _drop_null(v) for k, v in schema["properties"].items()}
    props["model_id"]["pattern"] = MODEL_ID
    props["timeout"]["maximum"] = settings.max_timeout
    if settings.max_job_memory_mb:
        props["memory_mb"]["maximum"] = settings.max_job_memory_mb
    props["memory_mb"]["minimum"] = max(1, settings.min_job_memory_mb)
    rules = [_exactly_one("model", "model_id")]
    if batch:
        for name in ("specs", "spec_texts"):
            props[name].update(minItems=1, maxItems=settings.max_batch)
        rules.append({"anyOf": [{"required": ["specs"]}, {"required": ["spec_texts"]}]})
    else:
        props["spec_text"]["minLength"] = 1
        rules.append(_exactly_one("spec", "spec_text"))
    schema["allOf"] = rules


def _bodies(document: dict, settings: Settings) -> None:
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        if name.startswith("Body_submit_batch"):
            _tighten_job_form(schema, settings, batch=True)
        elif name.startswith("Body_submit_"):
            _tighten_job_form(schema, settings, batch=False)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _operations(document: dict):
    for operations in document["paths"].values():
        yield from operations.values()


def _headers(document: dict) -> None:
    """Optional headers are strings, never null."""
    for operation in _operations(document):
        for parameter in operation.get("parameters", []):
            parameter["schema"] = _drop_null(parameter["schema"])


def _error_bodies(document: dict) -> None:
    """Every 4xx/5xx answer is the JSON error body, whatever the route's own media type (a
    text/plain or event-stream route answers its errors in JSON too), and FastAPI's default
    422 schema becomes ours."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operation in _operations(document):
        for status, answer in operation["responses"].items():
            if status[0] in "45" and (status != "503" or "HTTPValidationError" in str(answer)):
                answer["content"] = content
            if status == "422":
                answer["description"] = WHY[422]


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the tightened document at ``/openapi.json`` (built once, on first request)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            _error_bodies(doc)
            _bodies(doc, settings)
            _headers(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
