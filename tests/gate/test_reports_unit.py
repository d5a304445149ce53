"""Threshold logic and report shapes on hand-made outcomes (no verification runs)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from verifier.gate.gate import GateSummary, SampleOutcome, Thresholds, format_table
from verifier.gate.reports import junit_xml, sarif_dict, summary_dict
from verifier.gate.specs import BallOptions


def _summary(outcomes: list[str], **thresholds) -> GateSummary:
    samples = []
    for i, o in enumerate(outcomes):
        cex = (np.array([0.1, 0.2]), np.array([1.0, 3.0])) if o == "falsified" else (None, None)
        samples.append(SampleOutcome(i, f"s{i}", 0, o, 0.5, "m", "", *cex))
    return GateSummary("model.onnx", "d.npz", BallOptions(0.1), Thresholds(**thresholds),
                       samples, 1.0)


@pytest.mark.parametrize("outcomes, thresholds, passed", [
    (["certified"] * 3, {}, True),
    (["certified", "falsified"], {}, False),
    (["certified", "falsified"], {"min_certified": 0.5}, True),
    (["certified", "falsified"], {"min_certified": 0.5, "max_falsified": 0}, False),
    (["certified", "unknown"], {"min_certified": 0.5}, False),  # unknown counts against
    (["certified", "unknown"], {"min_certified": 0.5, "allow_unknown": True}, True),
    (["certified", "timeout"], {"min_certified": 0.5, "max_falsified": 0,
                                "allow_unknown": True}, True),
    (["certified", "timeout", "falsified"], {"min_certified": 0.3, "max_falsified": 1}, False),
    (["unknown"], {"allow_unknown": True}, False),  # still not certified
])
def test_thresholds(outcomes, thresholds, passed):
    s = _summary(outcomes, **thresholds)
    assert s.passed is passed
    assert ("GATE PASSED" in format_table(s)) is passed
    assert summary_dict(s)["passed"] is passed


def test_junit_unknown_is_failure_or_skipped():
    root = ET.fromstring(junit_xml(_summary(["unknown", "timeout", "error", "falsified"])))
    suite = root.find("testsuite")
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("3", "1", "0")
    assert [f.get("type") for f in suite.iter("failure")] == ["unknown", "timeout", "falsified"]
    root = ET.fromstring(junit_xml(_summary(["unknown", "timeout"], allow_unknown=True)))
    suite = root.find("testsuite")
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "2")
    assert len(suite.findall("testcase/skipped")) == 2


def test_sarif_levels_and_json_round_trip():
    log = sarif_dict(_summary(["falsified", "unknown"], allow_unknown=True, min_certified=0))
    json.loads(json.dumps(log))
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels == {"robustness/falsified": "error", "robustness/undecided": "warning"}
    assert "predicted class 1" in log["runs"][0]["results"][0]["message"]["text"]
