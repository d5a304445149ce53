"""Load test for the verification service: many small jobs at once, none may be lost.

    python -m benchmarks.load_service --spawn --workers 2 --jobs 200
    python -m benchmarks.load_service --spawn --executor ray [--ray-address HOST:PORT] --jobs 50
    python -m benchmarks.load_service --url http://127.0.0.1:8000 [--api-key K]

``--spawn`` starts ``nncert serve`` on a fresh data directory (and stops it afterwards);
``--url`` targets a running service. The script uploads one tiny ReLU network, submits
``--jobs`` verifications (alternately a ``sat`` and an ``unsat`` property) with
``--concurrency`` requests in flight, waits for all of them and checks that every accepted job
is listed exactly once, finished ``done`` and has the expected verdict. It prints throughput
and latency percentiles: submit (request round trip), queue wait, run and end to end (accepted
to finished, from the server's timestamps). Exit status 1 when a job is lost or wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

HEAD = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "(declare-const Y_0 Real)\n" + \
    "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(2))
# Y_0 = relu(X_0 + X_1) - relu(X_1 - X_0) ranges over [-2, 2] on the box.
SPECS = {"unsat": HEAD + "(assert (>= Y_0 3.0))\n", "sat": HEAD + "(assert (>= Y_0 1.5))\n"}
FINAL = ("done", "failed", "cancelled")


def tiny_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weights = {"W1": np.array([[1.0, -1.0], [1.0, 1.0]], np.float32),
               "W2": np.array([[1.0], [-1.0]], np.float32)}
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["Y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p = np.percentile(values, [50, 90, 99])
    return f"p50 {p[0]:.3f} s  p90 {p[1]:.3f} s  p99 {p[2]:.3f} s  max {max(values):.3f} s"


def spawn_server(workers: int, data_dir: Path,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``nncert serve`` on a free loopback port (``extra``: more serve options)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "serve", "--port", str(port), "--data-dir",
         str(data_dir), "--workers", str(workers), *extra],
        env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the spawned server did not become ready")


async def submit_all(client: httpx.AsyncClient, model_id: str, n: int, concurrency: int,
                     timeout: float) -> tuple[dict[str, str], list[float], int]:
    """Submit ``n`` jobs; (job id -> expected verdict, submit latencies, refused count)."""
    gate = asyncio.Semaphore(concurrency)
    expected: dict[str, str] = {}
    latencies: list[float] = []
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        verdict = "sat" if i % 2 else "unsat"
        async with gate:
            start = time.perf_counter()
            r = await client.post("/v1/verifications", data={
                "model_id": model_id, "spec_text": SPECS[verdict], "timeout": str(timeout)},
                headers={"Idempotency-Key": f"load-{model_id[:8]}-{i}-{time.time_ns()}"})
            latencies.append(time.perf_counter() - start)
        if r.status_code != 202:
            refused += 1
            print(f"job {i} refused: {r.status_code} {r.text[:200]}", file=sys.stderr)
            return
        expected[r.json()["id"]] = verdict

    await asyncio.gather(*(one(i) for i in range(n)))
    return expected, latencies, refused


async def wait_all(client: httpx.AsyncClient, ids: set[str], deadline: float) -> list[dict]:
    """Every job the service lists (all pages) once ``ids`` are all final."""
    while True:
        found, cursor = [], None
        while True:
            params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/v1/verifications", params=params)).json()
            found += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        mine = [j for j in found if j["id"] in ids]
        if len({j["id"] for j in mine if j["status"] in FINAL}) == len(ids):
            return mine
        if time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.5)


def seconds(job: dict, a: str, b: str) -> float | None:
    if not job.get(a) or not job.get(b):
        return None
    return (datetime.fromisoformat(job[b]) - datetime.fromisoformat(job[a])).total_seconds()


def report(expected: dict[str, str], jobs: list[dict], submit_lat: list[float], refused: int,
           wall: float) -> bool:
    ids = [j["id"] for j in jobs]
    duplicated = len(ids) - len(set(ids))
    lost = len(set(expected) - set(ids))
    unfinished = [j for j in jobs if j["status"] != "done"]
    wrong = [j for j in jobs if j["status"] == "done" and j["verdict"] != expected[j["id"]]]
    e2e = [s for j in jobs if (s := seconds(j, "created_at", "finished_at")) is not None]
    wait = [s for j in jobs if (s := seconds(j, "created_at", "started_at")) is not None]
    run = [s for j in jobs if (s := seconds(j, "started_at", "finished_at")) is not None]
    print(f"jobs submitted {len(expected) + refused}, accepted {len(expected)}, "
          f"refused {refused}")
    print(f"lost {lost}, duplicated {duplicated}, not done {len(unfinished)}, "
          f"wrong verdict {len(wrong)}")
    print(f"wall time {wall:.1f} s, throughput {len(jobs) / wall:.2f} jobs/s")
    print(f"submit latency  {percentiles(submit_lat)}")
    print(f"queue wait      {percentiles(wait)}")
    print(f"run time        {percentiles(run)}")
    print(f"end to end      {percentiles(e2e)}")
    return not (lost or duplicated or unfinished or wrong or refused)


async def run(url: str, args: argparse.Namespace) -> bool:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120,
                                 limits=limits) as client:
        r = await client.post("/v1/models", files={"file": ("tiny.onnx", tiny_model())})
        r.raise_for_status()
        model_id = r.json()["id"]
        start = time.monotonic()
        expected, latencies, refused = await submit_all(client, model_id, args.jobs,
                                                        args.concurrency, args.job_timeout)
        jobs = await wait_all(client, set(expected), start + args.deadline)
        wall = time.monotonic() - start
    return report(expected, jobs, latencies, refused, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000")
    where.add_argument("--spawn", action="store_true", help="start nncert serve for the run")
    parser.add_argument("--workers", type=int, default=2, help="workers of a spawned server")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="executor of a spawned server")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster of a spawned server (default: a private local one)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--job-timeout", type=float, default=60.0)
    parser.add_argument("--deadline", type=float, default=900.0, help="give up after (s)")
    parser.add_argument("--api-key", default=os.environ.get("NNCERT_API_KEY"))
    args = parser.parse_args(argv)
    if args.url:
        return 0 if asyncio.run(run(args.url.rstrip("/"), args)) else 1
    with tempfile.TemporaryDirectory(prefix="nncert-load-") as tmp:
        extra = ("--executor", args.executor)
        if args.ray_address:
            extra += ("--ray-address", args.ray_address)
        proc, url = spawn_server(args.workers, Path(tmp), extra)
        try:
            print(f"spawned nncert serve at {url} with {args.workers} worker(s), "
                  f"{args.executor} executor")
            ok = asyncio.run(run(url, args))
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
