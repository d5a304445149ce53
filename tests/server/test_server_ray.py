"""The Ray executor against a real Ray head on 127.0.0.1 (one head for the module).

Jobs go through the app (``TestClient(create_app(settings))`` with ``executor="ray"``): the
benchmark instances get the verdicts the local executor gives, cancellation and timeouts end
the Ray task, crashing, raising and memory-hungry tasks are recorded ``failed`` with their
reason, and jobs left running by a stopped server are re-queued by the next one.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest
from server_util import (
    SPEC_SAT,
    SPEC_UNSAT,
    client_for,
    settings_for,
    submit,
    wait_final,
    wait_status,
)
from test_server_restart import instances

if os.environ.get("NNCERT_REQUIRE_RAY") != "1":  # CI sets it: there a missing ray fails
    pytest.importorskip("ray", reason="the ray extra is not installed")

from ray_head import ray_head  # noqa: E402 - after the skip: it needs nothing from ray


@pytest.fixture(scope="module")
def ray_address():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        with ray_head(num_cpus=2, num_gpus=1) as address:  # a declared GPU, not a real one
            yield address


@pytest.fixture(scope="module")
def ray_driver(ray_address):
    """This process connected to the head once: the apps' executors reuse the connection (and
    so the Ray workers), which saves a driver and worker start per test. The executor's own
    ``ray.init`` is covered by the ``nncert serve`` test."""
    import ray

    ray.init(address=ray_address, namespace="nncert", log_to_driver=False)
    try:
        yield ray_address
    finally:
        ray.shutdown()


def ray_settings(path, address: str, **fields):
    fields.setdefault("workers", 2)
    return settings_for(path, executor="ray", ray_address=address, **fields)


def submit_all(client, pairs) -> list[str]:
    ids = []
    for model, spec in pairs:
        files = {"model": (model.name, model.read_bytes()), "spec": (spec.name, spec.read_bytes())}
        r = client.post("/v1/verifications", files=files, data={"timeout": "60"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def test_benchmark_verdicts_match_local_executor(ray_driver, benchmarks_dir, tmp_path):
    """Both executors run the instances at the same time (2 Ray CPUs, 2 local workers)."""
    pairs = instances(benchmarks_dir)
    with (client_for(ray_settings(tmp_path / "ray", ray_driver)) as on_ray,
          client_for(settings_for(tmp_path / "local", workers=2)) as local):
        assert on_ray.get("/readyz").json()["workers"] == 2
        ray_ids, local_ids = submit_all(on_ray, pairs), submit_all(local, pairs)
        ray_jobs = [wait_final(on_ray, job_id, timeout=240) for job_id in ray_ids]
        local_jobs = [wait_final(local, job_id, timeout=240) for job_id in local_ids]
        results = [on_ray.get(f"/v1/verifications/{j}/results").text for j in ray_ids]
    expected = [j["verdict"] for j in local_jobs]
    assert [j["status"] for j in ray_jobs] == ["done"] * len(pairs), ray_jobs
    assert [j["verdict"] for j in ray_jobs] == expected
    assert [r.splitlines()[0] for r in results] == expected
    sat = [j for j in ray_jobs if j["verdict"] == "sat"]
    assert sat and all(j["counterexample"]["x"] for j in sat)


def test_stand_in_runner_progress_and_counterexample(ray_driver, tmp_path):
    with client_for(ray_settings(tmp_path, ray_driver, job_runner="runners:stepper")) as client:
        unsat = submit(client, SPEC_UNSAT).json()["id"]
        sat = submit(client, SPEC_SAT).json()["id"]
        end = time.monotonic() + 60
        while client.get(f"/v1/verifications/{unsat}").json()["progress"] is None:
            assert time.monotonic() < end, "no progress reported"
            time.sleep(0.05)
        a, b = wait_final(client, unsat), wait_final(client, sat)
    assert (a["verdict"], b["verdict"]) == ("unsat", "sat")
    assert b["counterexample"] == {"x": [1.0, 0.5], "y": [1.5]} and a["attempts"] == 1


def test_cancel_and_timeout_end_the_task(ray_driver, tmp_path):
    settings = ray_settings(tmp_path, ray_driver, job_runner="runners:sleepy",
                            kill_grace_s=0.5)
    with client_for(settings) as client:
        job_id = submit(client, SPEC_UNSAT, timeout=100).json()["id"]
        assert wait_status(client, job_id, "running")["status"] == "running"
        r = client.delete(f"/v1/verifications/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        job = wait_final(client, submit(client, SPEC_UNSAT, timeout=1).json()["id"])
        assert job["status"] == "done" and job["verdict"] == "timeout", job
        assert client.get(f"/v1/verifications/{job_id}").json()["status"] == "cancelled"


@pytest.mark.parametrize("runner, reason", [
    ("runners:crash", "Ray worker died while running the job"),
    ("runners:boom", "internal error: RuntimeError: boom"),
])
def test_failing_tasks_are_recorded(ray_driver, tmp_path, runner, reason):
    with client_for(ray_settings(tmp_path, ray_driver, job_runner=runner)) as client:
        for _ in range(2):  # the server keeps going after the first
            job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
            assert job["status"] == "failed" and job["verdict"] == "error"
            assert job["message"].startswith(reason), job["message"]
        assert client.get("/healthz").status_code == 200


def test_memory_limit_fails_the_job(ray_driver, tmp_path):
    settings = ray_settings(tmp_path, ray_driver, job_runner="runners:hog")
    with client_for(settings) as client:
        job = wait_final(client, submit(client, SPEC_UNSAT, memory_mb=400).json()["id"])
        assert job["status"] == "failed", job
        assert job["message"] == "memory limit of 400 MiB exceeded"
        assert job["options"]["memory_mb"] == 400


def test_ray_max_calls_one_gives_every_job_a_fresh_worker(ray_driver, tmp_path):
    settings = ray_settings(tmp_path, ray_driver, job_runner="runners:leaky", workers=1,
                            ray_max_calls=1)
    with client_for(settings) as client:
        jobs = [wait_final(client, submit(client, SPEC_UNSAT).json()["id"]) for _ in range(2)]
    assert [j["status"] for j in jobs] == ["done", "done"]
    assert jobs[0]["message"] != jobs[1]["message"]  # the worker pids


def test_worker_left_running_abandoned_work_is_replaced(ray_driver, tmp_path):
    """A job whose verifier abandoned an overrunning stage (verifier.watchdog) keeps its
    verdict, and its worker process ends: the next job runs in a fresh one (fails if the
    task returned normally and Ray reused the process)."""
    settings = ray_settings(tmp_path, ray_driver, job_runner="runners:abandons", workers=1)
    with client_for(settings) as client:
        jobs = [wait_final(client, submit(client, SPEC_UNSAT).json()["id"]) for _ in range(2)]
    assert [(j["status"], j["verdict"]) for j in jobs] == [("done", "timeout")] * 2
    assert jobs[0]["message"] != jobs[1]["message"]  # the worker pids


def test_cuda_jobs_get_a_gpu_and_a_fresh_worker(ray_driver, tmp_path):
    settings = ray_settings(tmp_path, ray_driver, job_runner="runners:gpu_probe", workers=1)
    with client_for(settings) as client:
        jobs = [wait_final(client, submit(client, SPEC_UNSAT, device=device).json()["id"])
                for device in ("cuda", "cuda", "cpu")]
    info = [json.loads(j["message"]) for j in jobs]
    assert [i["gpus"] for i in info] == [["0"], ["0"], []], info
    assert info[0]["pid"] != info[1]["pid"]  # GPU jobs never share a worker process


def test_cuda_job_on_a_cluster_without_gpu_fails(ray_driver, tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    settings = ray_settings(tmp_path, ray_driver, job_runner="runners:stepper")
    with client_for(settings) as client:
        job = wait_final(client, submit(client, SPEC_UNSAT, device="cuda").json()["id"])
    assert job["status"] == "failed" and "no GPU" in job["message"]


def test_restart_requeues_running_jobs(ray_driver, tmp_path):
    first = ray_settings(tmp_path, ray_driver, job_runner="runners:sleepy")
    with client_for(first) as client:
        job_id = submit(client, SPEC_UNSAT, timeout=100).json()["id"]
        assert wait_status(client, job_id, "running")["status"] == "running"
    second = ray_settings(tmp_path, ray_driver, job_runner="runners:stepper")
    with client_for(second) as client:
        job = wait_final(client, job_id)
    assert (job["status"], job["verdict"], job["attempts"]) == ("done", "unsat", 2)


def test_nncert_serve_with_ray_executor(ray_address, tmp_path):
    """``nncert serve --executor ray --ray-address ADDR``: a real server process, a real job."""
    from live import LiveServer
    from server_util import tiny_model_bytes

    extra = ("--executor", "ray", "--ray-address", ray_address)
    with LiveServer(tmp_path, workers=1, extra=extra) as server:
        files = {"model": ("net.onnx", tiny_model_bytes())}
        r = httpx.post(server.url + "/v1/verifications", files=files,
                       data={"spec_text": SPEC_SAT, "timeout": "30"}, timeout=30)
        assert r.status_code == 202, r.text
        url = server.url + r.headers["Location"]
        end = time.monotonic() + 120
        while (job := httpx.get(url, timeout=10).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < end, job
            time.sleep(0.1)
        # SIGTERM goes to uvicorn's graceful shutdown, which re-raises the signal when done
        # (-15); Ray's own handler, had it stayed in place, exits at once with status 15.
        server.proc.terminate()
        assert server.proc.wait(30) == -signal.SIGTERM
    assert (job["status"], job["verdict"]) == ("done", "sat"), job
    assert len(job["counterexample"]["x"]) == 2


SERVER_SCRIPT = """
import sys, time
from pathlib import Path
from server_util import client_for, settings_for, submit
settings = settings_for(Path(sys.argv[1]), executor="ray", ray_address=sys.argv[2],
                        job_runner="runners:sleepy")
with client_for(settings) as client:
    job_id = submit(client, timeout=100).json()["id"]
    while client.get(f"/v1/verifications/{job_id}").json()["progress"] is None:
        time.sleep(0.05)
    print(job_id, flush=True)
    time.sleep(600)
"""


def test_kill9_of_the_server_ends_its_tasks_and_requeues(ray_address, tmp_path):
    """A server (Ray driver) that gets SIGKILL mid-job: Ray ends its task, and the next
    server re-queues the job (attempt 2) and finishes it."""
    import os
    import subprocess
    import sys

    from live import ROOT, alive
    from ray_head import HERE

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(tmp_path), ray_address],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        job_id = proc.stdout.readline().strip()
        assert job_id, "the server did not start its job"
        task_pids = [p for p in _pids_named(f"nncert-job-{job_id}")]
        assert task_pids, "no Ray worker runs the job"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    end = time.monotonic() + 30
    while any(alive(pid) for pid in task_pids):
        assert time.monotonic() < end, "the Ray task outlived its driver"
        time.sleep(0.1)
    settings = settings_for(tmp_path, executor="ray", ray_address=ray_address,
                            job_runner="runners:stepper")
    with client_for(settings) as client:
        job = wait_final(client, job_id)
    assert (job["status"], job["verdict"], job["attempts"]) == ("done", "unsat", 2)


def _pids_named(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment`` (Ray names a task's worker after
    the task)."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if fragment in cmd:
                found.append(int(entry.name))
    return found
