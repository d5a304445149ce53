"""Helpers for the service tests: a tiny ONNX model, matching specs, clients, polling."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from server.app import create_app
from server.settings import Settings

SPEC_HEAD = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(assert (>= X_0 -1.0))
(assert (<= X_0 1.0))
(assert (>= X_1 -1.0))
(assert (<= X_1 1.0))
"""
# Y_0 = relu(X_0 + X_1) - relu(X_1 - X_0) ranges over [-2, 2] on the box.
SPEC_UNSAT = SPEC_HEAD + "(assert (>= Y_0 3.0))\n"
SPEC_SAT = SPEC_HEAD + "(assert (>= Y_0 1.5))\n"


def tiny_model_bytes() -> bytes:
    """A 2-input Linear+Relu+Linear net (MatMul/Add/Relu), one output."""
    w1 = np.array([[1.0, -1.0], [1.0, 1.0]], dtype=np.float32)
    b1 = np.zeros(2, dtype=np.float32)
    w2 = np.array([[1.0], [-1.0]], dtype=np.float32)
    b2 = np.zeros(1, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "B1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="fc2"),
        helper.make_node("Add", ["h3", "B2"], ["Y"], name="bias2"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(a, n) for n, a in
         (("W1", w1), ("B1", b1), ("W2", w2), ("B2", b2))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def settings_for(data_dir: Path, **fields) -> Settings:
    fields.setdefault("workers", 1)
    fields.setdefault("kill_grace_s", 5.0)
    return Settings(data_dir=data_dir, **fields)


@contextmanager
def client_for(settings: Settings):
    """A TestClient whose lifespan (store + worker pool) ends with the block."""
    with TestClient(create_app(settings)) as client:
        yield client


def submit(client: TestClient, spec: str = SPEC_UNSAT, model: bytes | None = None,
           model_id: str | None = None, headers: dict | None = None, **options):
    files, data = {}, {k: str(v) for k, v in options.items()}
    if model_id is None:
        files["model"] = ("net.onnx", model or tiny_model_bytes(), "application/octet-stream")
    else:
        data["model_id"] = model_id
    data["spec_text"] = spec
    return client.post("/v1/verifications", files=files, data=data, headers=headers or {})


def wait_final(client: TestClient, job_id: str, timeout: float = 60.0,
               headers: dict | None = None) -> dict:
    """Poll a job until done/failed/cancelled; its last JSON."""
    end = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/verifications/{job_id}", headers=headers or {}).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        if time.monotonic() > end:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.1)


def wait_status(client, job_id: str, status: str, timeout: float = 60.0) -> dict:
    """Poll a job until it has ``status`` (or ``timeout`` s passed); returns the job."""
    end = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/verifications/{job_id}").json()
        if job["status"] == status or time.monotonic() > end:
            return job
        time.sleep(0.05)
