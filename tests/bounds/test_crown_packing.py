"""Intermediate CROWN packs each domain's positions m to a pass element (crown_interval): the
bounds and recorded linear bounds of a batch must equal those of each domain bounded alone,
whatever m and the memory chunking come out as."""

from __future__ import annotations

import pytest
import torch

import bounds.engine.crown as crown
import bounds.engine.intermediate as intermediate
import bounds.engine.spec_bounds as spec_bounds
from bounds.engine.intermediate import _rows_per_pass
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp

F64 = torch.float64


def _boxes(n_in: int, seed: int) -> Interval:
    """Boxes from wide to tiny: very different numbers of unstable neurons per domain."""
    gen = torch.Generator().manual_seed(seed)
    radius = torch.tensor([2.0, 1.0, 0.5, 0.1, 0.02, 1e-4, 0.7], dtype=F64).reshape(-1, 1, 1)
    centre = torch.randn((radius.shape[0], 1, n_in), generator=gen, dtype=F64)
    return Interval(centre - radius, centre + radius)


def _bound(graph, box, coef, options):
    res = bound_spec(graph, box, coef, torch.zeros((1, coef.shape[1]), dtype=F64), options,
                     record_linear=options.intermediate_alpha_iterations == 0)
    return res


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    both_inf = torch.isinf(a) & torch.isinf(b) & (a.sign() == b.sign())
    return bool((both_inf | ((a - b).abs() <= 1e-10 * (1 + a.abs()))).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("small_chunks", [False, True])
def test_packed_batch_equals_each_domain_alone(seed, small_chunks, monkeypatch):
    if small_chunks:  # a few pass elements per backward pass: exercises the chunk loop
        for module in (crown, intermediate, spec_bounds):  # each binds the budget at import
            monkeypatch.setattr(module, "MAX_COEF_ELEMENTS", 2_000)
    graph = random_mlp([5, 20, 20, 20, 20, 3], seed=seed)
    box = _boxes(5, seed)
    coef = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(seed), dtype=F64)
    options = BoundOptions(method="crown")
    batch = _bound(graph, box, coef, options)
    for i in range(box.lower.shape[0]):
        alone = _bound(graph, Interval(box.lower[i:i + 1], box.upper[i:i + 1]), coef, options)
        assert _same(batch.lower[i:i + 1], alone.lower)
        for name, iv in alone.intermediates.bounds.items():
            assert _same(batch.intermediates.bounds[name].lower[i:i + 1], iv.lower), name
            assert _same(batch.intermediates.bounds[name].upper[i:i + 1], iv.upper), name
        for name, rec in (alone.intermediates.linear_bounds or {}).items():
            mine = batch.intermediates.linear_bounds[name].select(slice(i, i + 1))
            for part in ("a_lo", "c_lo", "a_hi", "c_hi"):
                assert _same(getattr(mine, part), getattr(rec, part)), (name, part)


def test_rows_per_pass_follows_the_counts():
    # one busy domain among many quiet ones: a few rows per element, not the maximum
    counts = torch.tensor([22] + [5] * 50)
    assert _rows_per_pass(counts, 22) < 22
    # equal counts: one element per domain
    assert _rows_per_pass(torch.tensor([6] * 40), 6) == 6
