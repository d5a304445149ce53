"""Usage and input errors exit with status 2 and one line on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from verifier.gate.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _rc(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


def _gate(digits, *extra, data=None, model=None):
    return ["gate", "--model", model or digits.model, "--data", data or digits.data, *extra]


@pytest.mark.parametrize("eps", ["abc", "-1", "nan", "inf"])
def test_bad_eps(digits, eps, capsys):
    assert _rc(_gate(digits, "--eps", eps)) == 2
    assert "--eps" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--clip", "1,0"], ["--clip", "0"], ["--min-certified", "2"],
                                   ["--max-falsified", "-1"], ["--norm", "2"],
                                   ["--timeout-per-sample", "0"]])
def test_bad_options(digits, extra):
    assert _rc(_gate(digits, "--eps", "0.1", *extra)) == 2


def test_missing_files(digits, tmp_path, capsys):
    assert _rc(_gate(digits, "--eps", "0.1", model=tmp_path / "none.onnx")) == 2
    assert "none.onnx" in capsys.readouterr().err
    assert _rc(_gate(digits, "--eps", "0.1", data=tmp_path / "none.npz")) == 2
    assert "none.npz" in capsys.readouterr().err
    assert _rc(["gate", "--data", digits.data, "--eps", "0.1"]) == 2  # --model missing


@pytest.mark.parametrize("arrays, needle", [
    ({"x": np.zeros((3, 63)), "y": np.zeros(3, int)}, "shape"),
    ({"x": np.zeros((3, 64)), "y": np.zeros(2, int)}, "y has shape"),
    ({"x": np.zeros((3, 64)), "y": np.array([0, 1, 10])}, "outside [0, 10)"),
    ({"x": np.zeros((3, 64))}, "lacks"),
    ({"x": np.full((1, 64), np.nan), "y": np.zeros(1, int)}, "NaN"),
])
def test_bad_data(digits, tmp_path, capsys, arrays, needle):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert _rc(_gate(digits, "--eps", "0.1", data=bad)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_not_an_npz(digits, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    assert _rc(_gate(digits, "--eps", "0.1", data=bad)) == 2


def test_subprocess_exit_status_and_one_line(digits, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "verifier.gate", *map(str, _gate(
        digits, "--eps", "0.1", data=tmp_path / "missing.npz"))], capture_output=True,
        text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr


def test_report_without_matplotlib_is_a_clear_usage_error(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    for cmd in (_gate(digits, "--eps", "0.01", "--report", tmp_path / "r"),
                ["radius", "--model", digits.model, "--data", digits.data, "--report",
                 tmp_path / "r"]):
        assert _rc(cmd) == 2
        err = capsys.readouterr().err
        assert "matplotlib" in err and "pip install" in err
    assert not (tmp_path / "r").exists()


def test_api_key_needs_server(digits, capsys):
    assert _rc(_gate(digits, "--eps", "0.01", "--api-key", "k")) == 2
    assert "--server" in capsys.readouterr().err


def test_unreachable_server_is_exit_2(digits, capsys):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _rc(_gate(digits, "--eps", "0.01", "--server", f"http://127.0.0.1:{port}")) == 2
    assert "cannot reach" in capsys.readouterr().err
