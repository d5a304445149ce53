"""torch must load with a short OpenMP spin (see bounds/__init__.py): with libgomp's long
default spin, small ops on a busy machine ran 100x slower and runs overran their deadlines;
with no spin (passive waiting), branch-and-bound on free cores bounded a third fewer domains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# nncert imports torch lazily; whatever it loads later, the settings are made by then
PROBE = ("import {module}, os; "
         "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('GOMP_SPINCOUNT', '-'))")


def _settings(module: str, **env) -> tuple[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    environ.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], env=environ,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    policy, spin = out.stdout.split()
    return policy, spin


@pytest.mark.parametrize("module", ["bounds", "verifier.pipeline", "server.app"])
def test_importing_nncert_sets_a_short_spin_before_torch(module):
    from bounds import SPIN_COUNT

    assert _settings(module) == ("-", SPIN_COUNT)


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"},
                                 {"GOMP_SPINCOUNT": "123"}])
def test_a_users_setting_wins(env):
    policy, spin = _settings("verifier.pipeline", **env)
    assert policy == env.get("OMP_WAIT_POLICY", "-")
    assert spin == env.get("GOMP_SPINCOUNT", "-")
