"""Shared test fixtures and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(os.environ.get("NNCERT_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))


# With NNCERT_REQUIRE_BENCHMARKS=1 a missing benchmarks folder fails the tests that read it
# instead of skipping them (a CI that has the folder sets it: a wrong path must not pass).
REQUIRE_BENCHMARKS = os.environ.get("NNCERT_REQUIRE_BENCHMARKS") == "1"


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The shared benchmarks folder; skips (optional data, absent on a clean clone) or, with
    NNCERT_REQUIRE_BENCHMARKS=1, fails when it is not there."""
    if not BENCHMARKS.is_dir():
        message = f"shared benchmarks not found at {BENCHMARKS}"
        if REQUIRE_BENCHMARKS:
            pytest.fail(message + " (NNCERT_REQUIRE_BENCHMARKS=1)")
        pytest.skip(message)
    return BENCHMARKS


@pytest.fixture(autouse=True, scope="session")
def _no_memory_guard_in_the_test_process():
    """Commands run in this process (``main(["verify", ...])``, the gate, also from module
    fixtures: hence the session scope) would cap and guard the test worker's memory for
    every later test: the guard's limit is process-wide. Its own tests run it in child
    processes (tests/test_memory_floor.py), as do the CLI tests that start ``nncert``."""
    import verifier.memory_guard as memory_guard

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memory_guard, "guard_process_memory", lambda share=0.8: None)
        yield
