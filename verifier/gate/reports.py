"""Gate reports: JSON summary, JUnit XML, SARIF 2.1.0.

JUnit: one ``<testcase>`` per sample. ``falsified`` -> ``<failure type="falsified">`` whose
``message`` holds the predicted class, the output and the counterexample input (the input
truncated after ``MESSAGE_MAX_VALUES`` values; the element text holds all of it). ``unknown`` /
``timeout`` -> ``<failure>`` of that type, since they count against the gate, or ``<skipped>``
with ``--allow-unknown``. ``error`` -> ``<error>``.

SARIF: one result per sample that is not certified (rule ``robustness/falsified``, level
``error``; rule ``robustness/undecided``, level ``error``, or ``warning`` with
``--allow-unknown``; ``equivalence/violated`` and ``equivalence/undecided`` for the
equivalence gate), plus one ``gate/thresholds`` result when the gate fails. Every result
points at the model file. Certified samples produce no result (a clean code-scanning view).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from verifier.gate.equivalence import EquivalenceProperty
from verifier.gate.gate import OUTCOMES, GateSummary, SampleOutcome

MESSAGE_MAX_VALUES = 64
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_URI = "https://github.com/nncert/nncert"
RULES = (
    ("robustness/falsified", "RobustnessFalsified",
     "A counterexample inside the eps-ball changes the predicted class", "error"),
    ("robustness/undecided", "RobustnessUndecided",
     "Local robustness could be neither proved nor refuted (unknown, timeout or error)", "error"),
    ("gate/thresholds", "GateThresholds",
     "The certified-robustness thresholds of the gate do not hold", "error"),
    ("equivalence/violated", "EquivalenceViolated",
     "A counterexample inside the eps-ball separates the model from the reference", "error"),
    ("equivalence/undecided", "EquivalenceUndecided",
     "Equivalence to the reference could be neither proved nor refuted", "error"),
)


def _values(a: np.ndarray, limit: int | None = None) -> str:
    vals = a.tolist()
    text = ", ".join(f"{v:.9g}" for v in (vals if limit is None else vals[:limit]))
    more = f", ... ({len(vals) - limit} more)" if limit is not None and len(vals) > limit else ""
    return f"[{text}{more}]"


def counterexample_text(s: SampleOutcome, limit: int | None = MESSAGE_MAX_VALUES,
                        equivalence: EquivalenceProperty | None = None) -> str:
    """One line describing a falsified sample's counterexample."""
    if s.cex_x is None or s.cex_y is None:
        return f"falsified (label {s.label}); no counterexample recorded"
    if equivalence is not None and s.cex_ref_y is not None:
        return _equivalence_text(s, limit, equivalence)
    return (f"counterexample: predicted class {s.predicted} instead of label {s.label}; "
            f"y = {_values(s.cex_y)}; x = {_values(s.cex_x, limit)}")


def _equivalence_text(s: SampleOutcome, limit: int | None, eq: EquivalenceProperty) -> str:
    diff = np.abs(s.cex_y - s.cex_ref_y)
    if eq.mode == "max-diff":
        what = (f"|model - reference| = {diff.max():.9g} >= {eq.max_diff:g} at output "
                f"{int(diff.argmax())}")
    else:
        what = (f"model's class {s.predicted}, reference's class {int(np.argmax(s.cex_ref_y))} "
                "(ties count)")
    return (f"counterexample: {what}; reference y = {_values(s.cex_ref_y)}; model y = "
            f"{_values(s.cex_y)}; x = {_values(s.cex_x, limit)}")


def summary_dict(summary: GateSummary) -> dict:
    """The JSON summary (also the source of the other reports' numbers)."""
    b, t = summary.ball, summary.thresholds
    samples = []
    for s in summary.samples:
        d = {"index": s.index, "name": s.name, "label": s.label, "outcome": s.outcome,
             "time_s": round(s.time_s, 6), "method": s.method, "message": s.message}
        if s.cex_x is not None:
            d["counterexample"] = {"x": s.cex_x.tolist(), "y": s.cex_y.tolist(),
                                   "predicted": s.predicted}
            if s.cex_ref_y is not None:
                d["counterexample"]["reference_y"] = s.cex_ref_y.tolist()
                d["counterexample"]["max_abs_diff"] = float(np.abs(s.cex_y - s.cex_ref_y).max())
        samples.append(d)
    eq = summary.equivalence
    return {
        "tool": "nncert", "model": summary.model, "data": summary.data,
        "gate": "robustness" if eq is None else "equivalence",
        **({} if eq is None else {"reference": eq.reference, "property": eq.mode,
                                  "max_diff": eq.max_diff}),
        "eps": b.eps, "norm": b.norm, "clip": list(b.clip) if b.clip else None,
        "n_samples": len(summary.samples), "counts": summary.counts,
        "certified_accuracy": summary.certified_accuracy,
        "total_time_s": round(summary.total_time_s, 6),
        "thresholds": {"min_certified": t.min_certified, "max_falsified": t.max_falsified,
                       "allow_unknown": t.allow_unknown},
        "passed": summary.passed, "failures": summary.failures(), "samples": samples,
    }


def write_json(summary: GateSummary, path: str | Path) -> None:
    _write(path, json.dumps(summary_dict(summary), indent=2) + "\n")


def junit_xml(summary: GateSummary) -> str:
    """JUnit XML text: ``<testsuites><testsuite>`` with one ``<testcase>`` per sample."""
    c, n = summary.counts, len(summary.samples)
    allow = summary.thresholds.allow_unknown
    undecided = c["unknown"] + c["timeout"]
    failures = c["falsified"] + (0 if allow else undecided)
    skipped = undecided if allow else 0
    attrs = {"tests": str(n), "failures": str(failures), "errors": str(c["error"]),
             "skipped": str(skipped), "time": f"{summary.total_time_s:.3f}"}
    root = ET.Element("testsuites", name="nncert gate", **attrs)
    eq = summary.equivalence
    what = "robustness" if eq is None else (
        f"equivalence max-diff={eq.max_diff:g}" if eq.mode == "max-diff"
        else "equivalence same-label")
    suite = ET.SubElement(root, "testsuite", name=f"{what} eps={summary.ball.eps:g}", **attrs)
    props = ET.SubElement(suite, "properties")
    for key, value in (("model", summary.model), ("data", summary.data),
                       ("eps", repr(summary.ball.eps)), ("norm", summary.ball.norm),
                       ("certified_accuracy", f"{summary.certified_accuracy:.6f}"),
                       ("passed", str(summary.passed).lower()),
                       *(() if eq is None else (("reference", eq.reference),
                                                ("property", eq.describe())))):
        ET.SubElement(props, "property", name=key, value=value)
    classname = f"nncert.gate.{Path(summary.model).stem}"
    for s in summary.samples:
        case = ET.SubElement(suite, "testcase", classname=classname,
                             name=f"{s.name} (label {s.label})", time=f"{s.time_s:.3f}")
        _junit_outcome(case, s, allow, eq)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _junit_outcome(case: ET.Element, s: SampleOutcome, allow_unknown: bool,
                   eq: EquivalenceProperty | None) -> None:
    if s.outcome == "certified":
        return
    if s.outcome == "falsified":
        el = ET.SubElement(case, "failure", type="falsified",
                           message=counterexample_text(s, equivalence=eq))
        el.text = counterexample_text(s, limit=None, equivalence=eq)
    elif s.outcome == "error":
        el = ET.SubElement(case, "error", type="error", message=f"internal error: {s.message}")
    elif allow_unknown:
        ET.SubElement(case, "skipped", message=f"{s.outcome}: {s.message}".rstrip(": "))
    else:
        ET.SubElement(case, "failure", type=s.outcome,
                      message=f"{s.outcome}: {'robustness' if eq is None else 'equivalence'} "
                              "neither proved nor refuted"
                              + (f" ({s.message})" if s.message else ""))


def write_junit(summary: GateSummary, path: str | Path) -> None:
    _write(path, junit_xml(summary))


def sarif_dict(summary: GateSummary, base_dir: str | Path | None = None) -> dict:
    """A SARIF 2.1.0 log with one run; locations are the model file (relative to
    ``base_dir``, the current directory by default, when it lies below it)."""
    uri = _artifact_uri(summary.model, base_dir)
    allow = summary.thresholds.allow_unknown
    rules = [{"id": rid, "name": name, "shortDescription": {"text": text},
              "defaultConfiguration": {"level": level}} for rid, name, text, level in RULES]
    results = []
    eq = summary.equivalence
    violated, undecided = (0, 1) if eq is None else (3, 4)
    for s in summary.samples:
        if s.outcome == "certified":
            continue
        if s.outcome == "falsified":
            rule, level = violated, "error"
            text = f"{s.name}: {counterexample_text(s, equivalence=eq)}"
        else:
            rule, level = undecided, "warning" if allow else "error"
            text = f"{s.name} (label {s.label}): {s.outcome}" + (
                f" ({s.message})" if s.message else "")
        results.append(_sarif_result(rule, level, text, uri,
                                     {"sample": s.index, "label": s.label, "outcome": s.outcome,
                                      "eps": summary.ball.eps}))
    if not summary.passed:
        results.append(_sarif_result(2, "error", "; ".join(summary.failures()), uri,
                                     {"counts": summary.counts,
                                      "certified_accuracy": summary.certified_accuracy}))
    return {
        "$schema": SARIF_SCHEMA, "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "nncert", "informationUri": TOOL_URI, "rules": rules}},
            "invocations": [{"executionSuccessful": True}],
            "results": results,
        }],
    }


def _sarif_result(rule: int, level: str, text: str, uri: str, props: dict) -> dict:
    return {"ruleId": RULES[rule][0], "ruleIndex": rule, "level": level,
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
            "properties": props}


def _artifact_uri(model: str, base_dir: str | Path | None) -> str:
    path = Path(model).resolve()
    base = Path(base_dir or os.getcwd()).resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_uri()


def write_sarif(summary: GateSummary, path: str | Path) -> None:
    _write(path, json.dumps(sarif_dict(summary), indent=2) + "\n")


def _write(path: str | Path, text: str) -> None:
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


__all__ = ["OUTCOMES", "counterexample_text", "junit_xml", "sarif_dict", "summary_dict",
           "write_json", "write_junit", "write_sarif"]
