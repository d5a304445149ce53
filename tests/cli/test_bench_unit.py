"""verifier.bench without running anything: discovery, expected answers, scoring."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from verifier import bench
from verifier.bench import runner


def _suite(root: Path, name: str, expected: str | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "instances.csv").write_text("onnx/a.onnx,vnnlib/p.vnnlib,60\n"
                                          "onnx/b.onnx,vnnlib/q.vnnlib.gz,120.5\n")
    if expected is not None:
        (folder / "expected.csv").write_text(expected)
    return folder


def test_find_suites(tmp_path):
    a = _suite(tmp_path, "a")
    _suite(tmp_path, "b")
    assert bench.find_suites(a) == [a / "instances.csv"]
    assert bench.find_suites(a / "instances.csv") == [a / "instances.csv"]
    assert [p.parent.name for p in bench.find_suites(tmp_path)] == ["a", "b"]
    with pytest.raises(bench.BenchInputError):
        bench.find_suites(tmp_path / "a" / "nothing")


def test_read_instances_joins_expected(tmp_path):
    folder = _suite(tmp_path, "s", "onnx,vnnlib,expected,note\n"
                                   "onnx/a.onnx,vnnlib/p.vnnlib,violated,x\n"
                                   "./onnx/b.onnx,vnnlib/q.vnnlib.gz,unknown,\n")
    first, second = bench.read_instances(folder / "instances.csv")
    assert (first.benchmark, first.timeout, first.expected) == ("s", 60.0, "sat")
    assert first.onnx_path == folder / "onnx/a.onnx"
    assert (second.timeout, second.expected) == (120.5, "unknown")
    assert bench.effective_timeout(second, 30) == 30 and bench.effective_timeout(first, None) == 60


def test_select(tmp_path):
    instances = bench.read_instances(_suite(tmp_path, "s") / "instances.csv")
    assert [i.onnx for i in bench.select(instances, "q\\.vnnlib")] == ["onnx/b.onnx"]
    assert [i.onnx for i in bench.select(instances, "a\\.onnx")] == ["onnx/a.onnx"]
    assert len(bench.select(instances, None, 1)) == 1


def test_sample_spreads_over_each_suite():
    def inst(bm, k):
        return bench.Instance(bm, f"m{k}.onnx", f"p{k}.vnnlib", Path("m"), Path("p"), 1.0)

    items = [inst("a", k) for k in range(10)] + [inst("b", k) for k in range(3)]
    picked = bench.select(items, sample=4)
    assert [(i.benchmark, i.onnx) for i in picked] == [
        ("a", "m0.onnx"), ("a", "m3.onnx"), ("a", "m6.onnx"), ("a", "m9.onnx"),
        ("b", "m0.onnx"), ("b", "m1.onnx"), ("b", "m2.onnx")]
    assert len(bench.select(items, sample=1)) == 2
    assert [i.onnx for i in bench.select(items, "m[0-4]", sample=2)] == [
        "m0.onnx", "m4.onnx", "m0.onnx", "m2.onnx"]


def _outcome(result: str, expected: str, time_s: float = 1.0) -> bench.Outcome:
    inst = bench.Instance("s", "m.onnx", "p.vnnlib", Path("m"), Path("p"), 60, expected)
    return bench.Outcome(inst, result, time_s, 60)


@pytest.mark.parametrize(("result", "expected", "correct", "points"), [
    ("sat", "sat", "yes", 10), ("unsat", "unsat", "yes", 10), ("sat", "unsat", "no", -150),
    ("unsat", "sat", "no", -150), ("unsat", "unknown", "", 0), ("unknown", "sat", "", 0),
    ("timeout", "unsat", "", 0), ("error", "sat", "", 0), ("sat", "", "", 0),
])
def test_scoring(result, expected, correct, points):
    outcome = _outcome(result, expected)
    assert (outcome.correct, outcome.points) == (correct, points)


def test_tally_and_csv(tmp_path):
    outcomes = [_outcome("sat", "sat", 1.0), _outcome("unsat", "sat", 3.0),
                _outcome("timeout", "unsat", 2.0), _outcome("unknown", "", 10.0)]
    per, total = bench.tally(outcomes)
    assert list(per) == ["s"]
    assert (total.instances, total.incorrect, total.score) == (4, 1, -140)
    assert total.median_time == 2.5 and total.total_time == 16.0
    out = tmp_path / "r.csv"
    bench.write_csv(out, outcomes)
    assert out.read_text().splitlines()[0].startswith(
        "benchmark,onnx,vnnlib,result,time_s,expected,correct,timeout_s,overrun_s,killed")


def test_overrun_is_measured_by_the_parent_and_tallied():
    """overrun_s is the parent's wall time past the timeout (never negative); the tally keeps
    the worst overrun and counts killed workers."""
    inst = bench.Instance("s", "a.onnx", "b.vnnlib", Path("a.onnx"), Path("b.vnnlib"), 10.0)
    answer = {"result": "timeout", "time_s": 10.2}
    on_time = runner._outcome(inst, answer, 10.0, wall_s=9.5)
    late = runner._outcome(inst, answer, 10.0, wall_s=12.25)
    killed = runner._outcome(inst, answer, 10.0, wall_s=15.0, killed=True)
    assert on_time.overrun_s == 0.0 and late.overrun_s == 2.25
    _, total = bench.tally([on_time, late, killed])
    assert (total.killed, total.max_overrun_s) == (1, 5.0)


def test_hung_worker_is_killed_and_its_overrun_recorded(monkeypatch):
    """A worker that never answers is killed after timeout + grace; the row says so."""
    inst = bench.Instance("s", "a.onnx", "b.vnnlib", Path("a.onnx"), Path("b.vnnlib"), 0.05)

    class Hung:
        def __init__(self, start_timeout):
            pass

        def run(self, task, hard_limit):
            time.sleep(hard_limit)
            return None

        def alive(self):
            return True

        def close(self):
            pass

    monkeypatch.setattr(runner, "Worker", Hung)
    (outcome,) = bench.run_instances([inst], bench.BenchOptions(grace=0.05))
    assert outcome.result == "timeout" and outcome.killed
    assert outcome.overrun_s >= 0.04


def test_error_classification():
    from verifier.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, classify_error
    from verifier.errors import ModelError, UnsupportedOpError

    assert classify_error(ModelError("bad\nmodel")) == ("bad model", EXIT_BAD_INPUT)
    assert classify_error(UnsupportedOpError("Foo", "n1", ["Relu"]))[1] == EXIT_BAD_INPUT
    missing = FileNotFoundError(2, "No such file or directory", "x.onnx")
    assert classify_error(missing) == ("cannot read x.onnx: No such file or directory",
                                       EXIT_BAD_INPUT)
    message, status = classify_error(ZeroDivisionError("boom"))
    assert status == EXIT_INTERNAL and message == "internal error: ZeroDivisionError: boom"


def test_bab_flags_reach_the_config(monkeypatch):
    """--bab-* flags become VerifyConfig.bab in the bench worker (and verify's parser)."""
    import argparse

    from verifier.cli.common import add_bab_arguments, bab_settings
    from verifier.config import BabConfig

    p = argparse.ArgumentParser()
    add_bab_arguments(p)
    args = p.parse_args(["--no-nonlinear-bab", "--bab-points", "midpoint",
                         "--bab-heuristic", "width", "--bab-branching", "babsr",
                         "--no-product-bab"])
    settings = bab_settings(args)
    assert BabConfig(**settings) == BabConfig(nonlinear=False, products=False,
                                              points="midpoint", heuristic="width",
                                              branching="babsr")
    assert bab_settings(p.parse_args([]))["products"] is True
    seen = {}

    def fake_verify(onnx, vnnlib, config):
        seen["bab"] = config.bab
        raise RuntimeError("stop here")

    monkeypatch.setattr("verifier.pipeline.verify", fake_verify)
    instance = bench.Instance("b", "m.onnx", "s.vnnlib", Path("m.onnx"), Path("s.vnnlib"), 10.0)
    task = runner._task(instance, bench.BenchOptions(bab=settings))
    answer = bench.run_task(task)
    assert answer["result"] == "error"
    assert seen["bab"] == BabConfig(**settings)


def test_workers_side_by_side_split_the_cores(monkeypatch):
    """--jobs N: each worker runs torch on cpu_count // N threads (at least one); one worker,
    or the bench's own process, keeps torch's default."""
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    instance = bench.Instance("b", "m.onnx", "s.vnnlib", Path("m.onnx"), Path("s.vnnlib"), 10.0)
    threads = {jobs: runner._task(instance, bench.BenchOptions(jobs=jobs))["threads"]
               for jobs in (1, 4, 12, 32)}
    assert threads == {1: None, 4: 4, 12: 1, 32: 1}
    assert runner._task(instance, bench.BenchOptions(jobs=4, in_process=True))["threads"] is None
    seen = {}
    monkeypatch.setattr("bounds.engine.budget.set_device_share", lambda share: None)
    monkeypatch.setattr("torch.set_num_threads", lambda n: seen.setdefault("threads", n))
    monkeypatch.setattr("verifier.pipeline.verify",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("stop here")))
    bench.run_task(runner._task(instance, bench.BenchOptions(jobs=4)))
    assert seen == {"threads": 4}


def test_a_bench_worker_hands_heap_pages_back_after_each_answer(monkeypatch, tmp_path):
    """Like the service's workers (tests/server/test_server_memory.py): the heap's free pages
    go back after each answer is sent, not on the instance's clock."""
    import multiprocessing as mp

    import bounds.heap

    events = []

    class Logged:
        def __init__(self, conn):
            self.conn = conn

        def send(self, message):
            events.append(("send", message if message == "ready" else message["result"]))
            self.conn.send(message)

        def recv(self):
            return self.conn.recv()

    parent, child = mp.Pipe()
    monkeypatch.setattr(bounds.heap, "release_freed_pages", lambda: events.append("release"))
    monkeypatch.setattr(runner, "_log_to_stderr", lambda level: None)  # this process's logging
    task = {"onnx": str(tmp_path / "missing.onnx"), "vnnlib": str(tmp_path / "missing.vnnlib"),
            "timeout": 5, "method": "auto", "device": "cpu", "seed": 0, "check_model": False}
    parent.send(task)
    parent.send(None)
    runner._worker_main(Logged(child))
    assert events == [("send", "ready"), ("send", "error"), "release"]
