"""``nncert gate --server``: the same gate against a real ``nncert serve`` process (uvicorn,
one worker, temp data dir, API key), started on a free loopback port and stopped at the end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from verifier.gate.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "gate-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """URL of a running ``nncert serve`` (terminated after the module's tests)."""
    port, data = _free_port(), tmp_path_factory.mktemp("serve")
    env = dict(os.environ, OMP_NUM_THREADS="1", NNCERT_API_KEYS=API_KEY,
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "verifier.cli", "serve", "--port", str(port),
                             "--data-dir", str(data), "--workers", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"nncert serve did not start: {proc.stderr.read()!r}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _gate(digits, url, out: Path, eps: str, *extra, key: str = API_KEY) -> int:
    return main(["gate", "--model", str(digits.model), "--data", str(digits.data),
                 "--eps", eps, "--server", url, "--api-key", key, "--no-progress",
                 "--timeout-per-sample", "30", "--json", str(out / "gate.json"),
                 "--junit", str(out / "gate.xml"), *extra])


def test_remote_gate_passes(digits, server, tmp_path, capsys):
    assert _gate(digits, server, tmp_path, "0.005") == 0
    assert "GATE PASSED" in capsys.readouterr().out
    summary = json.loads((tmp_path / "gate.json").read_text())
    assert summary["counts"]["certified"] == len(digits.y)
    # Certified samples were proved by bounds, branch-and-bound or MILP (auto picks), never
    # by an attack.
    proving = {"incomplete", "bab-input", "bab-relu", "milp", "milp[gurobi]", "spec"}
    assert {s["method"] for s in summary["samples"]} <= proving


def test_remote_gate_fails_on_validated_counterexample(digits, server, tmp_path, capsys):
    rc = _gate(digits, server, tmp_path, "0.3", "--clip", "0,1", "--limit", "2")
    assert rc == 1
    assert "GATE FAILED" in capsys.readouterr().out
    summary = json.loads((tmp_path / "gate.json").read_text())
    falsified = [s for s in summary["samples"] if s["outcome"] == "falsified"]
    assert falsified
    for s in falsified:
        x = np.array(s["counterexample"]["x"])
        x0 = digits.x[s["index"]]
        assert np.all(x >= np.clip(x0 - 0.3, 0, 1)) and np.all(x <= np.clip(x0 + 0.3, 0, 1))
        logits = digits.logits(x)[0]
        assert np.delete(logits, s["label"]).max() >= logits[s["label"]] - 1e-4
    junit = ET.parse(tmp_path / "gate.xml").getroot()
    messages = [f.get("message") for f in junit.iter("failure")]
    assert any("counterexample" in m for m in messages)


def test_wrong_api_key_is_exit_2(digits, server, tmp_path, capsys):
    assert _gate(digits, server, tmp_path, "0.005", key="wrong") == 2
    err = capsys.readouterr().err
    assert "401" in err and "API key" in err


def _shift_models(tmp_path: Path) -> tuple[str, str, str]:
    """f = W x and g = W x + [0.3, -0.1]: |g - f|_inf is 0.3 everywhere."""
    from equiv_models import affine_model

    w = np.array([[1.0, -2.0], [0.5, 1.5]])
    f = affine_model(tmp_path / "f.onnx", w, np.zeros(2))
    g = affine_model(tmp_path / "g.onnx", w, np.array([0.3, -0.1]))
    np.savez(tmp_path / "p.npz", x=np.array([[0.0, 0.0], [1.0, -1.0]]))
    return f, g, str(tmp_path / "p.npz")


@pytest.mark.parametrize("max_diff, status", [("0.31", 0), ("0.29", 1)])
def test_remote_equivalence_gate(server, tmp_path, max_diff, status, capsys):
    f, g, data = _shift_models(tmp_path)
    rc = main(["gate", "--reference", f, "--model", g, "--data", data, "--eps", "0.5",
               "--max-diff", max_diff, "--server", server, "--api-key", API_KEY,
               "--no-progress", "--timeout-per-sample", "30", "--json",
               str(tmp_path / "eq.json")])
    assert rc == status
    summary = json.loads((tmp_path / "eq.json").read_text())
    assert summary["gate"] == "equivalence"
    assert {s["method"] for s in summary["samples"]} != {"remote"}  # the service answered
    if status:
        for s in summary["samples"]:
            assert s["outcome"] == "falsified"
            cex = s["counterexample"]
            assert cex["max_abs_diff"] == pytest.approx(0.3, abs=1e-6)
            x0 = [[0.0, 0.0], [1.0, -1.0]][s["index"]]
            assert np.all(np.abs(np.array(cex["x"]) - x0) <= 0.5)
    else:
        assert summary["counts"]["certified"] == 2
