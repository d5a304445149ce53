"""Every module of the packages imports on its own, first in a fresh interpreter state.

An import cycle breaks only the entry points that happen to import its modules in the wrong
order (``import bounds.engine.patches`` first failed once, through ``bounds.rules`` ->
``argmax_pairs`` -> ``patches_step`` -> the half-initialised ``patches``), so tests that import
the packages the usual way never see it. One subprocess imports each module after dropping
every module of the packages it already loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bounds", "verifier", "server")
PROBE = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("bounds", "verifier", "server")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
"""


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":  # entry scripts: importing one runs it
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_first():
    modules = _modules()
    assert "bounds.engine.patches" in modules and len(modules) > 150
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=600)
    assert out.stdout.strip() == "", out.stdout
