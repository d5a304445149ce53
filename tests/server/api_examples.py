"""Valid models and specs for API fuzzing: the OpenAPI document with examples added.

A schema cannot say "an ONNX file the verifier imports" or "a VNN-LIB text that matches it",
so generated bodies are almost all refused. The fuzz runs first upload the tiny model, then
give the document examples (and, for Hypothesis-driven runs, ``enum``s) naming that model and
matching specs, so that accepted jobs (202) are part of every run.
"""

from __future__ import annotations

import copy

SPEC_HEAD = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
             "(assert (>= X_0 -1.0))\n(assert (<= X_0 1.0))\n"
             "(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n")
SPECS = [SPEC_HEAD + "(assert (>= Y_0 3.0))\n", SPEC_HEAD + "(assert (>= Y_0 1.5))\n"]


def _body_schemas(document: dict) -> dict[str, dict]:
    return {name: schema for name, schema in document["components"]["schemas"].items()
            if name.startswith("Body_submit_")}


def _path_examples(document: dict, model_id: str, job_id: str) -> None:
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "job_id":
                    parameter["examples"] = {"job": {"value": job_id}}
                elif parameter["name"] == "model_id":
                    parameter["examples"] = {"model": {"value": model_id}}


def with_examples(document: dict, model_id: str, job_id: str, narrow: bool = False) -> dict:
    """A copy of ``document`` whose submit bodies and path parameters carry examples naming
    ``model_id`` (an uploaded model), matching specs and ``job_id`` (an existing job).

    ``narrow``: also restrict ``model_id`` and the spec texts to those values (``enum``), so
    that every generated positive body that takes them is accepted."""
    doc = copy.deepcopy(document)
    for name, schema in _body_schemas(doc).items():
        props = schema["properties"]
        props["model_id"]["examples"] = [model_id]
        texts = props["spec_texts"]["items"] if "batch" in name else props["spec_text"]
        texts["examples"] = list(SPECS)
        if narrow:
            props["model_id"] = {"type": "string", "enum": [model_id]}
            texts.clear()
            texts.update({"type": "string", "enum": list(SPECS)})
    _path_examples(doc, model_id, job_id)
    return doc
