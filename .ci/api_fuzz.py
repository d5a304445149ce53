"""Schemathesis against a running ``nncert serve``, with valid models and specs in its examples.

    .venv/bin/python .ci/api_fuzz.py [--max-time 300] [--workers 1] [--out DIR]

Starts a server on a fresh data directory with an API key, uploads the tiny test model and
submits one job, writes the server's OpenAPI document with examples naming them
(tests/server/api_examples.py) and runs ``schemathesis run`` on it for ``--max-time`` seconds
with every check but ``positive_data_acceptance`` (a schema-valid "model" is any byte string,
and the server rightly refuses bytes that are not ONNX with 400) and ``use_after_free``
(``DELETE`` cancels a job; the cancelled job stays readable). Exit status: schemathesis's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "server")]

from api_examples import SPECS, with_examples  # noqa: E402
from live import free_port  # noqa: E402
from server_util import tiny_model_bytes  # noqa: E402

KEY = "fuzz-key"
# positive_data_acceptance: arbitrary bytes are a schema-valid "model", rightly refused (400).
# use_after_free: DELETE cancels a job and the cancelled job stays readable (by design).
CHECKS_LEFT_OUT = "positive_data_acceptance,use_after_free"


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", NNCERT_API_KEYS=KEY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "serve", "--port", str(port), "--data-dir",
         str(data_dir), "--workers", str(workers)], cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("server did not become ready")


def prepare(url: str, out: Path) -> Path:
    """Upload the model, submit a job, write the document with examples; its path."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, headers=auth, timeout=120) as http:
        model = http.post("/v1/models", files={"file": ("m.onnx", tiny_model_bytes())})
        model.raise_for_status()
        job = http.post("/v1/verifications",
                        data={"model_id": model.json()["id"], "spec_text": SPECS[0]})
        job.raise_for_status()
        document = http.get("/openapi.json").json()
    path = out / "openapi-examples.json"
    path.write_text(json.dumps(with_examples(document, model.json()["id"], job.json()["id"],
                                             narrow=True)))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on SIGTERM too
    out = args.out or Path(tempfile.mkdtemp(prefix="nncert-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(out / "data", args.workers)
    try:
        schema = prepare(url, out)
        command = [str(Path(sys.executable).parent / "schemathesis"), "run", str(schema),
                   "--url", url, "-H", f"Authorization: Bearer {KEY}",
                   "--max-time", str(args.max_time), "--checks", "all",
                   "--exclude-checks", CHECKS_LEFT_OUT, "--request-timeout", "60",
                   "--report", "junit", "--report-dir", str(out), "--no-color"]
        print("$", " ".join(command), flush=True)
        return subprocess.run(command, cwd=ROOT).returncode
    finally:
        proc.terminate()  # the server only: it stops its own workers (running jobs re-queue)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its process group
        except ProcessLookupError:
            pass
        proc.wait(5)


if __name__ == "__main__":
    sys.exit(main())
