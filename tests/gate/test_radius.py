"""``nncert radius`` on the trained digits MLP: every certified radius re-verifies ``unsat``,
every falsified radius carries a counterexample that onnxruntime confirms in that ball; the
CSV, JSON and the HTML/PNG report it writes."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from verifier.gate.cli import main
from verifier.gate.radius import (
    CSV_HEADER,
    STATUSES,
    RadiusOptions,
    RadiusResult,
    ball_spec,
    read_csv,
)
from verifier.gate.specs import BallOptions

MAX_EPS, TOL = 0.3, 0.01
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def radius_run(digits, tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("radius")
    rc = main(["radius", "--model", str(digits.model), "--data", str(digits.data),
               "--max-eps", str(MAX_EPS), "--tol", str(TOL), "--clip", "0,1",
               "--timeout-per-sample", "8", "--device", "cpu", "--no-progress",
               "--out", str(out / "radius.csv"), "--json", str(out / "radius.json"),
               "--report", str(out / "report")])
    return rc, out


def test_csv_columns_and_brackets(digits, radius_run):
    rc, out = radius_run
    assert rc == 0
    with open(out / "radius.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER and len(rows) == len(digits.y) + 1
    results = read_csv(out / "radius.csv")
    assert [r.label for r in results] == digits.y.tolist()
    for r in results:
        assert r.status in STATUSES
        assert r.certified_eps is not None or r.falsified_eps is not None
        if r.certified_eps is not None and r.falsified_eps is not None:
            assert r.certified_eps < r.falsified_eps
        if r.status == "bracketed":
            assert r.falsified_eps - (r.certified_eps or 0.0) <= TOL
    # The trained net is certifiable at small radii and breakable at large ones.
    assert any(r.certified_eps for r in results) and any(r.falsified_eps for r in results)


def test_every_certified_radius_verifies_unsat(digits, radius_run):
    from verifier.config import VerifyConfig
    from verifier.pipeline import verify

    results = read_csv(radius_run[1] / "radius.csv")
    for i, r in enumerate(results):
        if r.certified_eps is None:
            continue
        spec = ball_spec(digits.x[i], r.label, 10, BallOptions(r.certified_eps, clip=(0, 1)))
        res = verify(str(digits.model), spec,
                     VerifyConfig(timeout=30, device="cpu", method="incomplete",
                                  check_model=False))
        assert res.verdict == "unsat", (r, res)


def test_every_falsified_radius_has_a_validated_counterexample(digits, radius_run):
    from verifier.onnx_import.loader import load_model
    from verifier.validate import validate_counterexample

    model = load_model(str(digits.model))
    body = json.loads((radius_run[1] / "radius.json").read_text())
    assert body["max_eps"] == MAX_EPS and body["clip"] == [0, 1]
    for i, s in enumerate(body["samples"]):
        if s["falsified_eps"] is None:
            continue
        eps = s["falsified_eps"]
        x = np.array(s["counterexample"]["x"])
        assert np.abs(x - digits.x[i]).max() <= eps  # inside the reported ball
        spec = ball_spec(digits.x[i], s["label"], 10, BallOptions(eps, clip=(0, 1)))
        cex = validate_counterexample(model, spec, x)
        assert cex is not None, s["sample"]
        logits = digits.logits(cex.x)[0]
        assert np.delete(logits, s["label"]).max() >= logits[s["label"]] - 1e-4
        assert s["calls"], "the bracket comes from recorded verification calls"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


def _check_page(folder, expected_pngs: set[str]) -> str:
    text = (folder / "index.html").read_text()
    parser = _Links()
    parser.feed(text)
    parser.close()
    assert text.startswith("<!DOCTYPE html>") and "table" in parser.tags
    assert set(parser.imgs) == expected_pngs
    for name in expected_pngs:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    return text


def test_radius_report_files(radius_run):
    text = _check_page(radius_run[1] / "report", {"certified_accuracy.png",
                                                  "radius_brackets.png"})
    assert "sample_0000" in text


def test_accuracy_curves_are_bounds():
    from verifier.gate.plots import accuracy_curves

    rs = [RadiusResult(0, "a", 0, 0.1, 0.2, "open"), RadiusResult(1, "b", 0, None, 0.0,
                                                                 "misclassified"),
          RadiusResult(2, "c", 0, 0.3, None, "robust")]
    grid, lower, upper = accuracy_curves(rs, 0.3, points=301)
    assert np.all(lower <= upper) and np.all(np.diff(lower) <= 0) and np.all(np.diff(upper) <= 0)
    at = {float(e): (lo, up) for e, lo, up in zip(grid, lower, upper, strict=True)}
    assert at[0.0] == pytest.approx((2 / 3, 2 / 3))  # b is falsified at 0
    assert at[0.15] == pytest.approx((1 / 3, 2 / 3))  # a: proved to 0.1, falsified at 0.2
    assert at[0.2] == pytest.approx((1 / 3, 1 / 3)) and at[0.3] == pytest.approx((1 / 3, 1 / 3))


@pytest.mark.parametrize("extra", [["--max-eps", "0"], ["--tol", "-1"], ["--norm", "2"],
                                   ["--clip", "2,1"]])
def test_radius_usage_errors(digits, extra):
    try:
        rc = main(["radius", "--model", str(digits.model), "--data", str(digits.data), *extra])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2


def test_options_validate():
    from verifier.errors import NncertError

    with pytest.raises(NncertError):
        RadiusOptions(max_eps=float("inf"))
    assert RadiusOptions(timeout_per_sample=8).per_call == 2
