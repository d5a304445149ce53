"""The first refinement chunk on a GPU pays one-time costs (``intermediate.cold_first_chunk``):
its rate is dropped and a second probe sizes the rest, once per process and refinement.
Exercised on the CPU by declaring it a device that pays a warm-up and making the first chunk
look slow through the refinement's own clock."""

from __future__ import annotations

import time

import pytest
import torch

import bounds.engine.intermediate as intermediate
from bounds.engine.deadline import engine_deadline
from bounds.engine.intermediate import compute_intermediate
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


class _SlowFirstChunk:
    """A stand-in for the ``time`` module of intermediate.py: the first timed chunk appears
    to take ``first_s``, every later reading advances by a millisecond."""

    def __init__(self, first_s: float):
        self.readings, self.first_s = 0, first_s

    def monotonic(self) -> float:
        self.readings += 1
        return time.monotonic() + (self.first_s if self.readings > 1 else 0.0) \
            + 1e-3 * self.readings


def _refine(monkeypatch, cold: bool):
    graph = random_mlp([3, 40, 40, 2], seed=5)
    gen = torch.Generator().manual_seed(1)
    centre = torch.randn((1, 1, 3), generator=gen, dtype=F64)
    box = Interval(centre - 1.0, centre + 1.0)
    monkeypatch.setattr(intermediate, "chunk_rows", lambda *a, **k: 4)  # probes of 2 rows
    monkeypatch.setattr(intermediate, "pays_warm_up", lambda device: cold)
    monkeypatch.setattr(intermediate, "time", _SlowFirstChunk(first_s=1000.0))
    with engine_deadline(time.monotonic() + 60.0):
        return compute_intermediate(graph, box, method="crown")


def _refined_positions(inter) -> int:
    ibp = compute_intermediate(inter.graph, inter.box, method="ibp")
    return sum(int((inter.bounds[k].lower > ibp.bounds[k].lower + 1e-12).sum())
               for k in inter.bounds if k in ibp.bounds)


@pytest.mark.parametrize("cold", [False, True])
def test_a_cold_first_chunk_does_not_decide_what_fits(monkeypatch, cold):
    """Warm device: the 1000 s first chunk leaves the rest of the layer to intervals (a
    few positions refined). Cold device: the rate of that chunk is dropped, the second probe
    is fast and the whole layer is refined, to bounds no looser than without the warm-up."""
    monkeypatch.setattr(intermediate, "_WARMED", set())
    inter = _refine(monkeypatch, cold)
    refined = _refined_positions(inter)
    if cold:
        # once per process: a second pass trusts its first chunk (here slow again)
        assert _refined_positions(_refine(monkeypatch, cold)) <= 4
        monkeypatch.setattr(intermediate, "pays_warm_up", lambda device: False)
        monkeypatch.setattr(intermediate, "chunk_rows", lambda *a, **k: 1 << 20)
        full = compute_intermediate(inter.graph, inter.box, method="crown")
        assert refined == _refined_positions(full) > 10
        for k, iv in full.bounds.items():
            assert torch.allclose(inter.bounds[k].lower, iv.lower, atol=1e-9)
            assert torch.allclose(inter.bounds[k].upper, iv.upper, atol=1e-9)
    else:
        assert refined <= 4
