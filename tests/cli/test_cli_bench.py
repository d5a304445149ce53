"""``nncert bench``: suites, csv rows, the summary line, filter/limit, expected mismatches."""

from __future__ import annotations

import csv
import re
import shutil

from cli_util import EXAMPLES, assert_one_line_error, run_nncert

SUMMARY = re.compile(r"^summary: instances=(\d+) unsat=(\d+) sat=(\d+) unknown=(\d+) "
                     r"timeout=(\d+) error=(\d+) incorrect=(\d+) time_s=[\d.]+ score=(-?\d+) "
                     r"killed=(\d+) max_overrun_s=[\d.]+ abandoned=(\d+) bounded=(\d+) "
                     r"max_first_bound_s=[\d.]+$")


def summary(proc) -> dict[str, int]:
    last = proc.stdout.splitlines()[-1]
    assert sum(line.startswith("summary:") for line in proc.stdout.splitlines()) == 1
    match = SUMMARY.match(last)
    assert match, last
    keys = ("instances", "unsat", "sat", "unknown", "timeout", "error", "incorrect", "score",
            "killed", "abandoned", "bounded")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_shared_test_suite(benchmarks_dir, tmp_path):
    # The five instances have known answers (expected.csv), each found in a few seconds; the
    # suite's own 60 s timeouts leave a wide margin, so every answer must be the known one.
    out = tmp_path / "results.csv"
    proc = run_nncert("bench", benchmarks_dir / "test", "--out", out, timeout=600)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    got = summary(proc)
    assert (got["instances"], got["unsat"], got["sat"], got["incorrect"]) == (5, 4, 1, 0), got
    assert got["bounded"] >= got["unsat"], got  # a proof needs a complete bound pass
    assert got["abandoned"] == 0, got  # no stage overran its deadline
    table = rows(out)
    assert len(table) == 5
    assert {"benchmark", "onnx", "vnnlib", "result", "time_s", "expected", "correct"} <= set(
        table[0])
    assert all(r["benchmark"] == "test" for r in table)
    assert [(r["result"], r["correct"]) for r in table] == [(r["expected"], "yes")
                                                            for r in table], table


def test_filter_and_limit(benchmarks_dir, tmp_path):
    out = tmp_path / "results.csv"
    proc = run_nncert("bench", benchmarks_dir / "test", "--filter", "nano|tiny", "--limit", "1",
                      "--out", out)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert summary(proc)["instances"] == 1
    (row,) = rows(out)
    assert row["onnx"] == "onnx/test_nano.onnx" and row["expected"] == "unsat"
    assert (row["result"], row["correct"]) == ("unsat", "yes"), row  # 60 s allowed, needs ~1 s
    assert float(row["time_s"]) >= 0


def test_filter_matches_vnnlib_path(benchmarks_dir):
    proc = run_nncert("bench", benchmarks_dir / "test", "--filter", "prop", "--limit", "0")
    assert proc.returncode == 0, proc.stderr
    assert summary(proc)["instances"] == 0


def test_bundled_suite_scores(tmp_path):
    out = tmp_path / "results.csv"
    proc = run_nncert("bench", EXAMPLES, "--timeout-cap", "30", "--out", out)
    assert proc.returncode == 0, proc.stderr
    got = summary(proc)
    assert (got["instances"], got["sat"], got["unsat"], got["incorrect"]) == (2, 1, 1, 0)
    assert got["score"] == 20
    assert [r["correct"] for r in rows(out)] == ["yes", "yes"]
    assert "vnnlib_specs" in proc.stdout and "TOTAL" in proc.stdout


def test_wrong_expected_answer_exits_1(tmp_path):
    suite = tmp_path / "wrong"
    suite.mkdir()
    for name in ("tiny.onnx", "tiny_sat.vnnlib"):
        shutil.copy(EXAMPLES / name, suite / name)
    (suite / "instances.csv").write_text("tiny.onnx,tiny_sat.vnnlib,30\n")
    (suite / "expected.csv").write_text("onnx,vnnlib,expected\ntiny.onnx,tiny_sat.vnnlib,unsat\n")
    out = tmp_path / "results.csv"
    proc = run_nncert("bench", suite, "--out", out)
    (row,) = rows(out)
    assert row["result"] == "sat", row  # the attack finds it at once (30 s allowed)
    assert proc.returncode == 1
    got = summary(proc)
    assert got["incorrect"] == 1 and got["score"] == -150
    assert row["correct"] == "no"


def test_folder_of_suites_and_hard_kill(tmp_path):
    for name in ("a", "b"):
        shutil.copytree(EXAMPLES, tmp_path / name, ignore=shutil.ignore_patterns("*.py"))
    out = tmp_path / "results.csv"
    # A timeout far below the cost of one run: every instance is answered timeout (by the
    # pipeline, or by killing the worker after the grace period) and the bench goes on.
    proc = run_nncert("bench", tmp_path, "--timeout-cap", "0.001", "--grace", "0.01",
                      "--out", out)
    assert proc.returncode == 0, proc.stderr
    table = rows(out)
    assert [r["benchmark"] for r in table] == ["a", "a", "b", "b"]
    assert all(r["result"] == "timeout" for r in table), table
    assert all(float(r["overrun_s"]) >= 0 for r in table), table
    assert summary(proc)["killed"] == sum(r["killed"] == "yes" for r in table)
    assert summary(proc)["abandoned"] == sum(bool(r["abandoned"]) for r in table)


def test_bad_filter_regex(tmp_path):
    assert_one_line_error(run_nncert("bench", EXAMPLES, "--filter", "("))
