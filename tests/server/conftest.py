"""Service tests: every test module must leave no worker process behind."""

from __future__ import annotations

import multiprocessing

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")


@pytest.fixture(autouse=True, scope="module")
def no_leftover_workers():
    yield
    left = [p for p in multiprocessing.active_children() if p.name.startswith("nncert-worker")]
    assert not left, f"worker processes left running: {left}"
