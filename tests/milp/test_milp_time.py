"""The MILP stage within its deadline: encodings too large to build are refused, an encoding
that would not end in time stops before its next node, and no solve starts without the time
its solver needs before its clock checks begin."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

import verifier.milp.encode as encode_mod
import verifier.milp.verify as verify_mod
from bounds.engine.deadline import DeadlineExceeded, engine_deadline
from tests.milp.nets import make_spec, onnx_mlp, random_layers
from verifier.milp import milp_verify


def _mlp_case():
    rng = np.random.default_rng(0)
    model = onnx_mlp(random_layers([4, 16, 16, 2], rng))
    spec = make_spec([(-np.ones(4), np.ones(4))], [[[1.0, -1.0]]], [[-100.0]])
    return model, spec


def test_an_encoding_too_large_to_build_gives_unknown(monkeypatch):
    model, spec = _mlp_case()
    monkeypatch.setattr(encode_mod, "MAX_WORK_ELEMENTS", 100)
    verdict, cex, stats = milp_verify(model, spec, time.monotonic() + 30, backend="highs")
    assert verdict == "unknown" and cex is None
    assert "too large" in stats["reason"]


def test_the_same_model_is_decided_without_the_cap():
    model, spec = _mlp_case()
    verdict, _, _ = milp_verify(model, spec, time.monotonic() + 30, backend="highs")
    assert verdict == "unsat"


def test_a_node_that_would_not_end_in_time_is_not_started():
    pace = encode_mod._Pace()
    pace.before(1000.0)
    time.sleep(0.05)
    pace.after()  # 20k elements/s so far
    with engine_deadline(time.monotonic() + 1.0):
        pace.before(1000.0)  # about 0.05 s: fits
        pace.after()
        with pytest.raises(DeadlineExceeded, match="MILP encoding"):
            pace.before(1e6)  # about 50 s


def test_no_solve_starts_without_time_for_its_fixed_part(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a solve started")

    monkeypatch.setattr(verify_mod, "solve", never)
    region = SimpleNamespace(deadline=time.monotonic() + 0.5, fixed_s=0.4, stats={"solves": []},
                             opts=SimpleNamespace(backend="highs"))
    out = verify_mod._Region._solve(region, None, 0, "proof")
    assert out.status == "timeout" and out.x is None
    region.deadline = time.monotonic() + verify_mod.MIN_SOLVE_S / 2
    region.fixed_s = 0.0
    assert verify_mod._Region._solve(region, None, 0, "proof").status == "timeout"
