"""torch must load with passive OpenMP waiting (see bounds/__init__.py): with active waiting,
small ops on a busy machine ran 100x slower and runs overran their deadlines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# nncert imports torch lazily; whatever it loads later, the policy is set by then
PROBE = "import {module}, os; print(os.environ['OMP_WAIT_POLICY'])"


def _policy(module: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], env=environ,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["bounds", "verifier.pipeline", "server.app"])
def test_importing_nncert_sets_passive_wait_before_torch(module):
    assert _policy(module) == "PASSIVE"


def test_a_users_setting_wins():
    assert _policy("verifier.pipeline", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
