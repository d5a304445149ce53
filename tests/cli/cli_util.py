"""Helpers for the CLI tests: run ``nncert`` in a subprocess, check its error lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
