"""The watchdog: answers by the hard deadline, abandons a stage still running, and says where
it was (verifier.watchdog, verifier.pipeline.verify, the bench's abandoned column)."""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path

import pytest

from verifier.watchdog import Abandoned, Finished, abandoned_running, run_until

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("watchdog_test", default="unset")


def test_finished_work_returns_its_value_in_the_callers_context():
    token = _VAR.set("caller")
    try:
        ran = run_until(time.monotonic() + 30, lambda: _VAR.get())
    finally:
        _VAR.reset(token)
    assert ran == Finished("caller")


def test_exceptions_reach_the_caller():
    def fail():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_until(time.monotonic() + 30, fail)


def _stuck_stage(release: threading.Event) -> str:
    release.wait()
    return "late"


def test_work_past_the_deadline_is_abandoned_and_located():
    release = threading.Event()
    ran = run_until(time.monotonic() + 0.1, lambda: _stuck_stage(release))
    try:
        assert isinstance(ran, Abandoned)
        assert "_stuck_stage" in ran.where
        assert abandoned_running()
    finally:
        release.set()
    for _ in range(200):
        if not abandoned_running():
            break
        time.sleep(0.01)
    assert not abandoned_running()


def test_verify_answers_timeout_when_a_stage_overruns(monkeypatch):
    """verify() answers ``timeout`` naming the stage; progress events sent by the abandoned
    stage afterwards are dropped."""
    from verifier import pipeline
    from verifier.config import VerifyConfig

    release, events = threading.Event(), []

    def stuck(model, spec, config, start, progress):
        progress({"step": 0})
        release.wait()
        progress({"step": 1})
        raise AssertionError("an abandoned stage's result must not be used")

    monkeypatch.setattr(pipeline, "_verify_timed", stuck)
    try:
        result = pipeline.verify("m.onnx", "p.vnnlib", VerifyConfig(timeout=0.3),
                                 progress=events.append)
        assert result.verdict == "timeout"
        assert "stuck" in result.stats["abandoned"] and "stuck" in result.message
    finally:
        release.set()
    time.sleep(0.1)
    assert events == [{"step": 0}]


def test_bench_counts_and_reports_abandoned_runs():
    from verifier.bench.runner import _outcome
    from verifier.bench.scores import tally
    from verifier.bench.suites import Instance

    inst = Instance("b", "m.onnx", "p.vnnlib", Path("m.onnx"), Path("p.vnnlib"), 10.0, "unsat")
    answer = {"result": "timeout", "time_s": 10.0, "abandoned": "bounds/engine/crown.py:1 f"}
    _, total = tally([_outcome(inst, answer, 10.0, 10.0),
                      _outcome(inst, {"result": "unsat", "time_s": 1.0}, 10.0, 1.0)])
    assert total.abandoned == 1
