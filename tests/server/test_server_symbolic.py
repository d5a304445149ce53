"""A model with a symbolic sequence length through the service: accepted at upload with the
dimension shown as -1, imported and checked when a spec sets it (the job then runs as
``nncert verify`` does), and refused by name when no size fits or several are symbolic."""

from __future__ import annotations

import numpy as np
import pytest
from server_util import client_for, settings_for, submit, wait_final

from tests.onnx_import.onnx_util import FEATURES, ort_outputs, sequence_model, sequence_spec


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with client_for(settings_for(tmp_path_factory.mktemp("symbolic") / "data")) as c:
        yield c


def _upload(client, model) -> dict:
    r = client.post("/v1/models", files={"file": ("seq.onnx", model.SerializeToString())})
    assert r.status_code == 201, r.text
    return r.json()


def test_upload_shows_the_symbolic_dimension(client):
    summary = _upload(client, sequence_model())
    assert summary["inputs"] == [{"name": "x", "shape": [1, -1, FEATURES]}]
    assert summary["outputs"] == [{"name": "y", "shape": [1, 2]}]
    assert "'x' axis 1 ('seq')" in summary["symbolic_axis"]


@pytest.mark.parametrize("steps", [4, 7])
def test_a_spec_sets_the_length_and_the_job_answers(client, steps):
    model = sequence_model()
    center = np.linspace(-1, 1, steps * FEATURES, dtype=np.float32).reshape(1, steps, FEATURES)
    y0 = float(ort_outputs(model, [{"x": center}])[0][0].ravel()[0])
    model_id = _upload(client, model)["id"]
    for spec, verdict in ((sequence_spec(center, 0.01, y0 + 100.0), "unsat"),
                          (sequence_spec(center, 0.01, y0 - 0.5), "sat")):
        r = submit(client, spec, model_id=model_id, timeout=30)
        assert r.status_code == 202, r.text
        final = wait_final(client, r.json()["id"])
        assert final["status"] == "done" and final["verdict"] == verdict, final
        if verdict == "sat":
            assert len(final["counterexample"]["x"]) == steps * FEATURES


def test_a_spec_that_fills_no_whole_length_is_refused(client):
    center = np.zeros((1, 13), dtype=np.float32)  # 13 values: not a multiple of 3 features
    r = submit(client, sequence_spec(center, 0.1, 0.0), model=sequence_model().SerializeToString())
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "'seq'" in message and "13 input values do not fill it" in message, message


def test_several_symbolic_dimensions_are_refused_at_upload(client):
    r = client.post("/v1/models", files={"file": (
        "seq.onnx", sequence_model(dims=("N", "seq", "feat")).SerializeToString())})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "'seq'" in message and "'feat'" in message and "fixes one only" in message, message
