"""GenBaB's bound-improvement scores are computed in rate-sized chunks of domains (a clock
check between them): chunking must not change a score, and a passed deadline stops it."""

from __future__ import annotations

import time

import pytest
import torch

from bounds.engine.deadline import DeadlineExceeded, engine_deadline
from bounds.graph import Node
from verifier.bab.branching import SplitLayer
from verifier.bab.nonlinear import SplitPoints, bbps_layer

F64 = torch.float64


def _layer_inputs(op: str, batch: int = 6, rows: int = 3, width: int = 5, alpha: bool = True):
    gen = torch.Generator().manual_seed(3)
    attrs = {"approximate": "none"} if op == "Gelu" else {}
    node = Node("act", op, ("z",), (width,), attrs)
    layer = SplitLayer("act", "z", (width,), op, attrs)
    lower = -3 * torch.rand((batch, width), dtype=F64, generator=gen)
    upper = lower + 4 * torch.rand((batch, width), dtype=F64, generator=gen) + 1e-3
    a = torch.randn((batch, rows, width), dtype=F64, generator=gen)
    w = torch.ones((batch, rows), dtype=F64)
    al = torch.rand((batch, rows, width), dtype=F64, generator=gen) if alpha else None
    return node, layer, lower, upper, a, al, w


def _one_domain_chunks(monkeypatch) -> None:
    import bounds.engine.deadline as deadline

    monkeypatch.setattr(deadline, "FIRST_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(deadline, "CHUNK_TARGET_S", 0.0)


@pytest.mark.parametrize("op", ["Sigmoid", "Gelu", "Tanh"])
@pytest.mark.parametrize("alpha", [True, False])
def test_scores_in_one_domain_chunks_equal_the_whole_batch(monkeypatch, op, alpha):
    args = _layer_inputs(op, alpha=alpha)
    whole = bbps_layer(*args, SplitPoints("midpoint"))
    _one_domain_chunks(monkeypatch)
    chunked = bbps_layer(*args, SplitPoints("midpoint"))
    assert chunked.shape == whole.shape == (6, 5)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


def test_scores_stop_at_the_deadline(monkeypatch):
    _one_domain_chunks(monkeypatch)
    with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        bbps_layer(*_layer_inputs("Gelu"), SplitPoints("midpoint"))
