"""Global options, the light start-up path, and the capability queries."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_util import ROOT, assert_one_line_error, run_nncert

from verifier.cli.supports_cmd import CAPABILITIES


def test_parser_imports_nothing_heavy():
    code = ("import sys, verifier.cli; verifier.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'numpy', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_help_version_name():
    assert run_nncert("--help").returncode == 0
    version = run_nncert("--version")
    assert version.returncode == 0 and version.stdout.strip()
    name = run_nncert("--name")
    assert name.returncode == 0 and "nncert" in name.stdout


def test_no_command_is_bad_input():
    assert_one_line_error(run_nncert())


def test_unknown_option_is_one_line():
    assert_one_line_error(run_nncert("verify", "--no-such-option", "a", "b"))


def test_supports_onnx_operators_lists_registry():
    """The listed ops come from the converter registry, less the constant-only ones (which
    fold at import but refuse input-dependent operands)."""
    from verifier.onnx_import.registry import listed_ops, supported_ops

    proc = run_nncert("supports", "--onnx-operators")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.split()
    assert listed == listed_ops()
    assert "Relu" in listed and "Range" not in listed
    assert set(listed) < set(supported_ops())


@pytest.mark.parametrize("capability", sorted(CAPABILITIES))
def test_supports_every_capability(capability):
    proc = run_nncert("supports", f"--{capability}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    if capability == "onnx-operators-unsat-proofs":
        assert lines == []
    else:
        assert lines and all(line.strip() == line and line for line in lines)
    if capability.endswith("versions"):
        assert len(lines) == 2


def test_supports_needs_a_capability():
    assert_one_line_error(run_nncert("supports"))
