"""``kill -9`` a real ``nncert serve`` mid-run, restart it: no accepted job is lost or doubled.

The five instances of ../shared/benchmarks/test are submitted concurrently to a server with
two workers; once a job runs, the server (only the server) gets SIGKILL. Its workers must exit
on their own, and a new server on the same data directory must finish every job with the
verdict that ``nncert verify`` (``verifier.verify``) gives.
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from live import LiveServer, alive

FINAL = ("done", "failed", "cancelled")


def instances(root: Path) -> list[tuple[Path, Path]]:
    with open(root / "test" / "instances.csv") as f:
        return [(root / "test" / r[0], root / "test" / r[1]) for r in csv.reader(f) if r]


def submit(url: str, model: Path, spec: Path) -> str:
    files = {"model": (model.name, model.read_bytes()), "spec": (spec.name, spec.read_bytes())}
    r = httpx.post(url + "/v1/verifications", files=files, data={"timeout": "60"}, timeout=60)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def jobs(url: str) -> list[dict]:
    return httpx.get(url + "/v1/verifications", params={"limit": 100}, timeout=10).json()["items"]


def wait_until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def direct_verdicts(pairs: list[tuple[Path, Path]]) -> list[str]:
    """What ``nncert verify MODEL SPEC --timeout 60`` answers, computed in this process."""
    from verifier.config import VerifyConfig
    from verifier.pipeline import verify

    return [verify(str(m), str(s), VerifyConfig(timeout=60)).verdict for m, s in pairs]


def test_kill9_restart_loses_nothing(benchmarks_dir, tmp_path):
    pairs = instances(benchmarks_dir)
    data = tmp_path / "data"
    first = LiveServer(data, workers=2).start()
    try:
        with ThreadPoolExecutor(len(pairs)) as pool:
            ids = list(pool.map(lambda p: submit(first.url, *p), pairs))
        wait_until(lambda: any(j["status"] == "running" for j in jobs(first.url)), 60,
                   "a running job")
        workers = first.kill9()
        assert workers, "the server had no worker processes"
        wait_until(lambda: not any(alive(pid) for pid in workers), 15,
                   f"orphaned workers {workers} to exit")
    finally:
        first.stop()

    with LiveServer(data, workers=2) as second:
        def all_final():
            found = jobs(second.url)
            return found if all(j["status"] in FINAL for j in found) else None

        final = wait_until(all_final, 240, "every job to finish after the restart")
        results = {j: httpx.get(f"{second.url}/v1/verifications/{j}/results").text
                   for j in ids}
    by_id = {j["id"]: j for j in final}
    assert len(final) == len(by_id) == len(ids) and set(by_id) == set(ids)  # 0 lost, 0 doubled
    assert any(j["attempts"] == 2 for j in final), "no job was running at the kill"
    expected = direct_verdicts(pairs)
    got = [by_id[j]["verdict"] for j in ids]
    assert [by_id[j]["status"] for j in ids] == ["done"] * len(ids), final
    assert got == expected
    assert [results[j].splitlines()[0] for j in ids] == expected
