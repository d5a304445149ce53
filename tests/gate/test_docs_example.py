"""docs/ci-gate.md's equivalence worked example runs as written.

The code block after the ``<!-- equivalence-example`` marker is split into commands (backslash
continuations joined); each command is run from the repository root, with ``nncert`` as
``python -m verifier.cli``, ``python`` as this interpreter and ``/tmp/eqgate`` as a fresh
temporary folder, and must end with the exit status its ``# exit N`` comment names.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ci-gate.md"
MARKER = "<!-- equivalence-example"


def example_commands() -> list[tuple[str, int | None]]:
    """(command, expected exit status or None) for each command of the example block."""
    text = DOC.read_text()
    block = text[text.index(MARKER):]
    block = block[block.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        status = re.search(r"#\s*exit (\d+)\s*$", line)
        command = line[:status.start()].strip() if status else line
        commands.append((command, int(status.group(1)) if status else None))
    return commands


def _argv(command: str, out: Path) -> list[str]:
    words = shlex.split(command.replace("/tmp/eqgate", str(out)))
    if words[0] == "nncert":
        return [sys.executable, "-m", "verifier.cli", *words[1:]]
    assert words[0] == "python", f"unexpected command in the example: {command}"
    return [sys.executable, *words[1:]]


def test_the_example_block_has_the_documented_gates():
    commands = example_commands()
    assert len(commands) == 4
    assert [status for _, status in commands] == [None, 0, 0, 1]
    assert all("--reference" in c for c, _ in commands[1:])


def test_equivalence_example_runs_as_written(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for command, status in example_commands():
        done = subprocess.run(_argv(command, tmp_path), cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=600)
        want = 0 if status is None else status
        assert done.returncode == want, (command, done.stdout[-2000:], done.stderr[-2000:])
    refuted = json.loads((tmp_path / "pruned.json").read_text())
    assert refuted["counts"]["falsified"] == refuted["n_samples"] == 3
    for s in refuted["samples"]:
        assert s["counterexample"]["max_abs_diff"] >= 0.25
    proved = json.loads((tmp_path / "fp16.json").read_text())
    assert proved["passed"] and proved["counts"]["certified"] == 3
