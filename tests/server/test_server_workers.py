"""Worker failures, cancellation and hard timeouts, with stand-in runners (no verifier)."""

from __future__ import annotations

from server_util import SPEC_UNSAT, client_for, settings_for, submit, wait_final, wait_status


def test_crashing_job_fails_and_worker_restarts(tmp_path):
    settings = settings_for(tmp_path, job_runner="runners:crash")
    with client_for(settings) as client:
        for _ in range(2):  # the second job needs the restarted worker
            job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
            assert job["status"] == "failed" and job["verdict"] == "error"
            assert "exit code 3" in job["message"]
            assert client.get(f"/v1/verifications/{job['id']}/results").text == "error\n"
        assert client.get("/healthz").status_code == 200


def test_raising_job_fails_with_reason(tmp_path):
    with client_for(settings_for(tmp_path, job_runner="runners:boom")) as client:
        job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
        assert job["status"] == "failed"
        assert job["message"] == "internal error: RuntimeError: boom"


def test_cancel_running_and_kill_after_timeout(tmp_path):
    settings = settings_for(tmp_path, job_runner="runners:sleepy", kill_grace_s=0.5)
    with client_for(settings) as client:
        job_id = submit(client, SPEC_UNSAT, timeout=100).json()["id"]
        running = wait_status(client, job_id, "running", timeout=30.0)
        assert running["status"] == "running"
        assert wait_status(client, job_id, "x", timeout=1.5)["progress"] is not None
        r = client.delete(f"/v1/verifications/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        # The worker is killed and replaced: the next job runs (and is killed past its timeout).
        job = wait_final(client, submit(client, SPEC_UNSAT, timeout=0.5).json()["id"])
        assert job["status"] == "done" and job["verdict"] == "timeout"
        assert client.get(f"/v1/verifications/{job['id']}/results").text == "timeout\n"
        assert client.get(f"/v1/verifications/{job_id}").json()["status"] == "cancelled"


def test_memory_limit_fails_the_job_and_the_pool_goes_on(tmp_path):
    settings = settings_for(tmp_path, job_runner="runners:hog", job_memory_mb=300,
                            max_job_memory_mb=1000, min_job_memory_mb=0)
    with client_for(settings) as client:
        job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
        assert job["status"] == "failed" and job["verdict"] == "error"
        assert job["message"] == "memory limit of 300 MiB exceeded"
        assert job["options"]["memory_mb"] == 300  # the server default, filled in
        job = wait_final(client, submit(client, SPEC_UNSAT, memory_mb=200).json()["id"])
        assert job["message"] == "memory limit of 200 MiB exceeded"
        r = submit(client, SPEC_UNSAT, memory_mb=1001)
        assert r.status_code == 422 and "above the limit of 1000 MiB" in r.text
        assert client.get("/readyz").json()["workers"] == 1


def test_job_under_its_memory_limit_finishes(tmp_path):
    settings = settings_for(tmp_path, job_runner="runners:stepper", job_memory_mb=1000)
    with client_for(settings) as client:
        job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
    assert (job["status"], job["verdict"]) == ("done", "unsat")


def test_real_verification_over_its_memory_limit(tmp_path):
    """The verifier itself (torch loaded, tiny model) needs about 300 MiB: 200 is too little.
    The next job, under the 4096 MiB default, gets its verdict from a fresh worker."""
    with client_for(settings_for(tmp_path, min_job_memory_mb=0)) as client:
        job = wait_final(client, submit(client, SPEC_UNSAT, memory_mb=200).json()["id"])
        assert (job["status"], job["message"]) == ("failed", "memory limit of 200 MiB exceeded")
        job = wait_final(client, submit(client, SPEC_UNSAT).json()["id"])
        assert (job["status"], job["verdict"]) == ("done", "unsat"), job
        assert job["options"]["memory_mb"] == 4096


def test_worker_holding_memory_after_a_job_is_replaced(tmp_path):
    settings = settings_for(tmp_path, job_runner="runners:leaky", worker_recycle_mb=200)
    with client_for(settings) as client:
        pids = [wait_final(client, submit(client, SPEC_UNSAT).json()["id"])["message"]
                for _ in range(2)]
    assert pids[0] != pids[1]
    kept = settings_for(tmp_path / "kept", job_runner="runners:leaky", worker_recycle_mb=0)
    with client_for(kept) as client:
        pids = [wait_final(client, submit(client, SPEC_UNSAT).json()["id"])["message"]
                for _ in range(2)]
    assert pids[0] == pids[1]


def test_worker_left_running_abandoned_work_is_replaced(tmp_path):
    """A job whose verifier abandoned an overrunning stage (verifier.watchdog) leaves it
    running in the worker: the next job gets a fresh worker (fails if the flag is ignored)."""
    with client_for(settings_for(tmp_path, job_runner="runners:abandons")) as client:
        jobs = [wait_final(client, submit(client, SPEC_UNSAT).json()["id"]) for _ in range(2)]
    assert [j["verdict"] for j in jobs] == ["timeout", "timeout"]
    assert jobs[0]["message"] != jobs[1]["message"]
