"""Reading the inputs keeps to the run's clock: a timeout too short to read the model or the
spec answers ``timeout`` at once, never by abandoning the read (verifier.load_time)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from verifier import pipeline
from verifier.config import VerifyConfig
from verifier.load_time import (
    FIXED_S,
    GZIP_EXPANSION,
    NoTimeToLoad,
    estimated_load_s,
    require_time_to_load,
)
from verifier.watchdog import abandoned_running

EXAMPLES = Path(__file__).resolve().parents[1] / "vnnlib_specs"
MODEL = EXAMPLES / "tiny.onnx"
SPEC = EXAMPLES / "tiny_sat.vnnlib"


def test_estimate_grows_with_size_and_counts_gzip_expanded(tmp_path):
    plain = tmp_path / "m.bin"
    plain.write_bytes(b"x" * 1_000_000)
    packed = tmp_path / "m.bin.gz"
    packed.write_bytes(gzip.compress(b"x" * 1_000_000))
    assert estimated_load_s(plain, 1e6) == pytest.approx(FIXED_S + 1.0)
    size = packed.stat().st_size
    assert estimated_load_s(packed, 1e6) == pytest.approx(FIXED_S + GZIP_EXPANSION * size / 1e6)
    assert estimated_load_s(tmp_path / "missing", 1e6) == FIXED_S


def test_require_names_the_input_and_the_times(tmp_path):
    path = tmp_path / "s.vnnlib"
    path.write_bytes(b"x" * 3000)
    require_time_to_load(path, "the spec", 1e6, deadline=10.0, now=9.0)
    with pytest.raises(NoTimeToLoad, match=r"left 0.005 s for reading the spec, which needs "
                                           r"about 0.013 s"):
        require_time_to_load(path, "the spec", 1e6, deadline=10.0, now=9.995)


@pytest.mark.parametrize("timeout", [1e-9, 0.001, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0, 60.0])
def test_stages_end_before_the_watchdog(timeout):
    """A stage's deadline leaves the watchdog's reserve plus as much again: a step that ends
    a little past its deadline is not taken for an overrun (timeouts under 0.1 s put the
    watchdog first before)."""
    gap = (0.0 + timeout - pipeline.WATCHDOG_RESERVE_S) - pipeline.stage_deadline(0.0, timeout)
    assert gap >= pipeline.WATCHDOG_RESERVE_S - 1e-12


@pytest.mark.parametrize("timeout", [1e-6, 0.005, 0.02])
def test_a_timeout_shorter_than_the_reserves_answers_at_once(timeout):
    """The watchdog would give up at once: nothing starts (it was abandoned before)."""
    result = pipeline.verify(str(MODEL), str(SPEC), VerifyConfig(timeout=timeout))
    assert result.verdict == "timeout"
    assert "no time to run" in result.message
    assert "abandoned" not in result.stats
    assert not abandoned_running()


def test_too_short_to_read_the_model_stops_before_reading_it(tmp_path, monkeypatch):
    """A 3 MB model needs about 0.07 s to read; 0.06 s leaves 0.04 s: it is not read."""
    model = tmp_path / "big.onnx"
    model.write_bytes(b"\0" * 3_000_000)
    monkeypatch.setattr(pipeline, "load_runnable_model",
                        lambda path: pytest.fail("the model was read"))
    result = pipeline.verify(str(model), str(SPEC), VerifyConfig(timeout=0.06))
    assert result.verdict == "timeout"
    assert "reading the model" in result.message
    assert "abandoned" not in result.stats


def test_too_short_to_read_the_spec_stops_before_parsing_it(tmp_path, monkeypatch):
    """The spec's read is checked after the model's: a spec too large for the time left is
    not parsed (the parser would run past the deadline: it cannot read the clock)."""
    spec = tmp_path / "big.vnnlib"
    spec.write_text(SPEC.read_text() + ";" + " " * 3_000_000 + "\n")
    monkeypatch.setattr("verifier.spec.load_spec",
                        lambda path: pytest.fail("the spec was parsed"))
    start = time.monotonic()
    result = pipeline.verify(str(MODEL), str(spec), VerifyConfig(timeout=0.5))
    assert result.verdict == "timeout"
    assert "reading the spec" in result.message
    assert "abandoned" not in result.stats
    assert time.monotonic() - start < 0.5


def test_enough_time_still_runs_the_verification():
    result = pipeline.verify(str(MODEL), str(SPEC), VerifyConfig(timeout=30))
    assert result.verdict == "sat"
