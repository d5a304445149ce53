"""Helpers for the CLI tests: run ``nncert`` in a subprocess, check which pieces exist."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "vnnlib_specs"


def run_nncert(*args: str, timeout: float = 180, cwd: Path | None = None):
    """Run ``python -m verifier.cli ARGS``; returns the CompletedProcess (text mode)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "verifier.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env=env, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc, status: int = 2) -> str:
    """Exit ``status``, exactly one non-empty stderr line, no traceback; returns the line."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def has_spec_parser() -> bool:
    try:
        spec = importlib.import_module("verifier.spec")
    except ImportError:
        return False
    return hasattr(spec, "load_spec") or hasattr(spec, "load_query")


def has_ops(*ops: str) -> bool:
    try:
        from verifier.onnx_import.registry import supported_ops
    except ImportError:
        return False
    return set(ops) <= set(supported_ops())


def pipeline_ready() -> bool:
    """The importer handles the bundled example and the spec parser exists."""
    return has_spec_parser() and has_ops("Gemm", "Relu")


needs_spec = pytest.mark.skipif(not has_spec_parser(), reason="VNN-LIB parser not there yet")
needs_pipeline = pytest.mark.skipif(not pipeline_ready(), reason="importer/parser not ready")
