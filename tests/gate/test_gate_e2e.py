"""End to end: ``gate`` on a trained digits MLP (pass at small eps, fail on a real
counterexample at large eps) and the JUnit / SARIF / JSON reports it writes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from verifier.gate.cli import main

SMALL_EPS, LARGE_EPS = "0.005", "0.3"


def _gate(digits, tmp_path, eps, *extra):
    files = {k: tmp_path / f"report.{k}" for k in ("json", "junit", "sarif")}
    rc = main(["gate", "--model", str(digits.model), "--data", str(digits.data), "--eps", eps,
               "--json", str(files["json"]), "--junit", str(files["junit"]),
               "--sarif", str(files["sarif"]), "--device", "cpu", *extra])
    summary = json.loads(files["json"].read_text())
    junit = ET.parse(files["junit"]).getroot()
    sarif = json.loads(files["sarif"].read_text())
    return rc, summary, junit, sarif


@pytest.fixture(scope="module")
def passing(digits, tmp_path_factory):
    return _gate(digits, tmp_path_factory.mktemp("pass"), SMALL_EPS)


@pytest.fixture(scope="module")
def failing(digits, tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("fail")
    return _gate(digits, out, LARGE_EPS, "--clip", "0,1", "--timeout-per-sample", "30",
                 "--report", str(out / "report"))


def _check_sarif_structure(sarif: dict, model_name: str) -> None:
    assert sarif["version"] == "2.1.0"
    assert "sarif" in sarif["$schema"]
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "nncert"
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(set(rule_ids)) == len(rule_ids) and all(r["shortDescription"]["text"]
                                                         for r in driver["rules"])
    for res in run["results"]:
        assert res["ruleId"] in rule_ids and rule_ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note", "none")
        assert res["message"]["text"]
        (loc,) = res["locations"]
        assert loc["physicalLocation"]["artifactLocation"]["uri"].endswith(model_name)


def _check_junit_structure(root: ET.Element, n: int) -> ET.Element:
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert int(suite.get("tests")) == n and float(suite.get("time")) >= 0
    cases = suite.findall("testcase")
    assert len(cases) == n
    for case in cases:
        assert case.get("classname") and case.get("name") and float(case.get("time")) >= 0
    return suite


def test_small_eps_gate_passes(digits, passing):
    rc, summary, junit, sarif = passing
    assert rc == 0
    n = len(digits.y)
    assert summary["counts"]["certified"] == n and summary["certified_accuracy"] == 1.0
    assert summary["passed"] and summary["failures"] == []
    suite = _check_junit_structure(junit, n)
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert not junit.findall(".//failure") and not junit.findall(".//error")
    _check_sarif_structure(sarif, digits.model.name)
    assert sarif["runs"][0]["results"] == []


def test_small_eps_is_unsat_with_bounds_only(digits):
    """The incomplete method (CROWN/alpha-CROWN) alone proves the small-eps property."""
    from verifier.config import VerifyConfig
    from verifier.gate.specs import BallOptions, input_box, robustness_vnnlib
    from verifier.pipeline import verify
    from verifier.spec import parse_vnnlib

    lower, upper = input_box(digits.x[0], BallOptions(float(SMALL_EPS)))
    spec = parse_vnnlib(robustness_vnnlib(lower, upper, int(digits.y[0]), 10))
    res = verify(str(digits.model), spec,
                 VerifyConfig(timeout=30, method="incomplete", device="cpu"))
    assert res.verdict == "unsat"


def test_large_eps_gate_fails_on_real_counterexample(digits, failing):
    rc, summary, junit, sarif = failing
    assert rc == 1
    assert not summary["passed"] and summary["counts"]["falsified"] >= 1
    eps = float(LARGE_EPS)
    for s in summary["samples"]:
        if s["outcome"] != "falsified":
            continue
        x = np.array(s["counterexample"]["x"])
        x0 = digits.x[s["index"]].astype(np.float64)
        assert np.all(x >= np.clip(x0 - eps, 0, 1)) and np.all(x <= np.clip(x0 + eps, 0, 1))
        logits = digits.logits(x)[0]
        label = s["label"]
        others = np.delete(logits, label)
        assert others.max() >= logits[label] - 1e-4  # float64 re-run of the float32 model
        assert s["counterexample"]["predicted"] == int(np.argmax(s["counterexample"]["y"]))
    suite = _check_junit_structure(junit, len(digits.y))
    failures = suite.findall("testcase/failure[@type='falsified']")
    assert len(failures) == summary["counts"]["falsified"]
    first = next(s for s in summary["samples"] if s["outcome"] == "falsified")
    message = failures[0].get("message")
    assert "counterexample" in message and f"label {first['label']}" in message
    assert f"{first['counterexample']['x'][0]:.9g}" in message
    _check_sarif_structure(sarif, digits.model.name)
    results = sarif["runs"][0]["results"]
    falsified = [r for r in results if r["ruleId"] == "robustness/falsified"]
    assert len(falsified) == summary["counts"]["falsified"]
    assert all(r["level"] == "error" for r in falsified)
    assert any(r["ruleId"] == "gate/thresholds" for r in results)


def test_gate_report_page_and_plot(digits, failing, tmp_path_factory):
    from test_radius import _check_page

    junit_path = next(tmp_path_factory.getbasetemp().glob("fail*/report.junit"))
    text = _check_page(junit_path.parent / "report", {"outcomes.png"})
    assert "GATE FAILED" in text and "falsified" in text


def test_thresholds_can_tolerate_falsified_samples(digits, capsys):
    rc = main(["gate", "--model", str(digits.model), "--data", str(digits.data),
               "--eps", LARGE_EPS, "--clip", "0,1", "--limit", "2", "--min-certified", "0",
               "--max-falsified", "2", "--allow-unknown", "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "GATE PASSED" in out and "certified accuracy" in out


def test_the_gate_guards_its_memory_like_verify(digits, tmp_path, monkeypatch):
    """The gate verifies in its own process: it caps and guards that process's memory
    (verifier.memory_guard; off in test processes, so a recorder stands in here)."""
    import verifier.memory_guard as memory_guard

    calls = []
    monkeypatch.setattr(memory_guard, "guard_process_memory",
                        lambda share=0.8: calls.append(share))
    rc, summary, _, _ = _gate(digits, tmp_path, SMALL_EPS)
    assert rc == 0 and calls == [0.8]
