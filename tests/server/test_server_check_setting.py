"""Settings.check_model reaches the job: off, each job skips the model check with a warning."""

from __future__ import annotations

import logging

from server_util import SPEC_UNSAT, client_for, settings_for, submit, wait_final

from server.settings import Settings
from server.worker import run_verification


def report_check(task: dict, progress) -> dict:
    """Stand-in runner (imported by name in the worker): echoes the task's check setting."""
    return {"verdict": "unknown", "message": f"check_model={task['check_model']}"}


def test_setting_reaches_the_runner(tmp_path):
    for check in (True, False):
        settings = settings_for(tmp_path / str(check), check_model=check,
                                job_runner="test_server_check_setting:report_check")
        with client_for(settings) as client:
            job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
        assert job["message"] == f"check_model={check}"


def test_default_runner_skips_the_check_with_a_warning(monkeypatch, caplog, tmp_path):
    seen = {}

    def fake_verify(model, spec, config, progress=None):
        seen["check_model"] = config.check_model
        raise RuntimeError("stop here")

    monkeypatch.setattr("verifier.pipeline.verify", fake_verify)
    spec = tmp_path / "s.vnnlib"  # the worker parses the spec before it calls verify
    spec.write_text(SPEC_UNSAT)
    task = {"timeout": 5.0, "method": "auto", "device": "cpu", "model_path": "m.onnx",
            "spec_path": str(spec)}
    for check, warned in ((False, True), (True, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="server.worker"):
            try:
                run_verification({**task, "check_model": check}, lambda event: None)
            except RuntimeError:
                pass
        assert seen["check_model"] is check
        assert ("model check against onnxruntime skipped" in caplog.text) is warned


def test_env_turns_the_check_off(monkeypatch, tmp_path):
    monkeypatch.setenv("NNCERT_DATA_DIR", str(tmp_path))
    assert Settings.from_env().check_model is True
    monkeypatch.setenv("NNCERT_CHECK_MODEL", "0")
    assert Settings.from_env().check_model is False
