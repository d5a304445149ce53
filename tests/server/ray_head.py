"""A real single-node Ray head on 127.0.0.1 for the Ray executor tests.

``ray start --head --block`` runs in a new session (its own process group) with a short temp
dir (Ray's socket paths must stay short) and token authentication off (loopback only); its
workers find ``server``, ``verifier`` and the test runners through ``PYTHONPATH``. Stopping
kills the whole process group, so no Ray process outlives the tests, even after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from live import free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
READY_LINE = "Ray runtime started"


@contextmanager
def ray_head(num_cpus: int = 2, num_gpus: int = 0, timeout: float = 120.0) -> Iterator[str]:
    """Start a head, yield its address (``127.0.0.1:PORT``), stop it. ``num_gpus`` GPUs are
    declared whether or not the machine has them (Ray trusts the declaration: enough to test
    that GPU jobs ask for and get one)."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="nrt", dir="/tmp"))
    log_path = temp / "head.log"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1",
               RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    ray_cli = str(Path(sys.executable).with_name("ray"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [ray_cli, "start", "--head", "--block", f"--port={port}",
             "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
             "--object-store-memory=200000000", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.monotonic() + timeout
        while READY_LINE not in log_path.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited ({proc.returncode}):\n"
                                   + log_path.read_text()[-3000:])
            if time.monotonic() > end:
                raise RuntimeError("the Ray head did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        _kill_session_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _kill_session_leftovers(temp: Path) -> None:
    """Kill processes of this head that left its process group (they name its temp dir)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(temp) in cmd:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
