"""``nncert serve`` wiring: argument parsing, the loopback rule, a real uvicorn smoke run."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.cli import add_serve_command, is_loopback, settings_from_args
from verifier.cli.common import UsageError

ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_settings_from_args(tmp_path, monkeypatch):
    monkeypatch.delenv("NNCERT_API_KEYS", raising=False)
    monkeypatch.delenv("NNCERT_API_KEYS_FILE", raising=False)
    s = settings_from_args(parse(["--data-dir", str(tmp_path), "--workers", "3",
                                  "--max-request-mb", "2", "--rate-limit", "5",
                                  "--rate-burst", "7"]))
    assert (s.data_dir, s.workers, s.host, s.max_request_bytes) == (tmp_path, 3, "127.0.0.1",
                                                                   2 << 20)
    assert (s.rate_limit_per_s, s.rate_limit_burst) == (5.0, 7)
    with pytest.raises(UsageError, match="without API keys"):
        settings_from_args(parse(["--host", "0.0.0.0", "--data-dir", str(tmp_path)]))
    keys = tmp_path / "keys"
    keys.write_text("k1\n\nk2\n")
    s = settings_from_args(parse(["--host", "0.0.0.0", "--api-keys-file", str(keys)]))
    assert s.key_allowed("k2") and not s.key_allowed("k3") and len(s.api_key_hashes) == 2


def test_executor_and_memory_flags(tmp_path, monkeypatch):
    for var in ("NNCERT_EXECUTOR", "NNCERT_RAY_ADDRESS", "NNCERT_JOB_MEMORY_MB",
                "NNCERT_MAX_JOB_MEMORY_MB"):
        monkeypatch.delenv(var, raising=False)
    s = settings_from_args(parse(["--data-dir", str(tmp_path)]))
    assert (s.executor, s.ray_address, s.job_memory_mb, s.max_job_memory_mb) == (
        "local", None, 4096, 16384)
    s = settings_from_args(parse(["--data-dir", str(tmp_path), "--executor", "ray",
                                  "--ray-address", "127.0.0.1:6379", "--job-memory-mb", "512",
                                  "--max-job-memory-mb", "1024"]))
    assert (s.executor, s.ray_address, s.job_memory_mb, s.max_job_memory_mb) == (
        "ray", "127.0.0.1:6379", 512, 1024)
    with pytest.raises(UsageError, match="needs --executor ray"):
        settings_from_args(parse(["--data-dir", str(tmp_path), "--ray-address", "auto"]))
    with pytest.raises(UsageError, match="job_memory_mb 2048 must be between"):
        settings_from_args(parse(["--data-dir", str(tmp_path), "--job-memory-mb", "2048",
                                  "--max-job-memory-mb", "1024"]))
    monkeypatch.setenv("NNCERT_EXECUTOR", "ray")
    monkeypatch.setenv("NNCERT_JOB_MEMORY_MB", "0")
    monkeypatch.setenv("NNCERT_MAX_JOB_MEMORY_MB", "0")
    s = settings_from_args(parse(["--data-dir", str(tmp_path)]))
    assert (s.executor, s.job_memory_mb, s.max_job_memory_mb) == ("ray", 0, 0)


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_real_server_smoke(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from server.cli import serve_main, add_serve_command; import argparse;"
            "p = argparse.ArgumentParser(); add_serve_command(p.add_subparsers());"
            "sys.exit(serve_main(p.parse_args(sys.argv[1:])))")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port),
                             "--data-dir", str(tmp_path), "--workers", "0"], cwd=ROOT)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < end, "server did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert (tmp_path / "nncert.sqlite3").exists()
    finally:
        proc.terminate()
        proc.wait(10)
