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


def test_a_slow_node_stops_between_chunks_before_the_deadline():
    """An affine node whose basis vectors take 20 ms each (a wide conv): its chunks are sized
    from their pace and the one that would not end in time is not started."""
    import scipy.sparse as sp
    import torch

    def slow_identity(basis):
        time.sleep(0.02 * basis[0].shape[0])
        return basis[0]

    columns = [sp.identity(200, format="csr")]
    start = time.monotonic()
    with engine_deadline(start + 0.5), pytest.raises(DeadlineExceeded, match="would not end"):
        encode_mod._linear_part(slow_identity, torch.zeros(1, 200, dtype=torch.float64),
                                columns, [(200,)])
    assert time.monotonic() - start < 0.5  # 200 vectors need 4 s: stopped on its estimate


def test_chunks_give_the_same_matrix_as_one_push():
    import scipy.sparse as sp
    import torch

    w = torch.as_tensor(np.random.default_rng(0).normal(size=(7, 30)))
    columns = [sp.random(30, 50, density=0.2, format="csr", random_state=1)]
    got = encode_mod._linear_part(lambda b: b[0] @ w.T, torch.zeros(1, 7, dtype=torch.float64),
                                  columns, [(30,)])
    np.testing.assert_allclose(got.toarray(), w.numpy() @ columns[0].toarray(), atol=1e-12)


def test_affine_nodes_are_not_priced_by_the_pace_of_other_nodes(monkeypatch):
    """An affine node's element count says little of its time (Convnet_avgpool's pooling:
    30x the conv's elements in 8x its time; the conv's pace gave a 20 s run up in 3 s): its
    chunks keep to the deadline themselves, so a slow pace seen before it does not stop it."""
    from tests.milp.nets import crown_encoding, onnx_conv_avgpool

    model = onnx_conv_avgpool(1, side=12, channels=4)
    lower, upper = -np.ones(144), np.ones(144)
    after = encode_mod._Pace.after

    def slow_after(self):  # every node measured as if it took 1000 s
        after(self)
        self.spent += 1000.0

    monkeypatch.setattr(encode_mod._Pace, "after", slow_after)
    with engine_deadline(time.monotonic() + 30):
        enc = crown_encoding(model, lower, upper)
    assert enc.output.size == 2
