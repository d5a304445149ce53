"""Column alphas on dense coefficients (``crown._column_step``): the default planes broadcast
over the spec rows with the alpha planes written at the columns give the bound and the alpha
gradient of the merged [B, S, *shape] planes (``crown._column_relaxation``), enclose sampled
outputs for random alphas in their ranges, and follow a change of the input interval."""

from __future__ import annotations

import pytest
import torch

from bounds.engine import crown
from bounds.engine.alpha import column_alphas
from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import ColumnAlpha, PassCache
from bounds.types import Interval
from tests.bounds.test_sparse_alpha import _box, _coef, _net, _samples

F64 = torch.float64
CASES = [(act, seed) for act in ("Relu", "Sigmoid", "Tanh") for seed in range(3)]


def _merged(monkeypatch) -> None:
    """The reference: every column alpha through merged planes."""
    monkeypatch.setattr(crown, "_column_step", lambda p, node, rule, coef, alpha:
                        crown._planes_step(p, crown._column_relaxation(p, node, rule, alpha),
                                           coef))


def _random_columns(inter, cache: PassCache, rows: int, seed: int) -> dict:
    """Column alphas where the net picks a strict subset of positions, random in [0, 1]
    (every alpha range of these ops holds [0, 1] after the clamp in the rules)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, a in column_alphas(inter, rows, cache).items():
        if isinstance(a, ColumnAlpha):
            values = torch.rand(a.values.shape, generator=gen, dtype=a.values.dtype)
            out[name] = ColumnAlpha(a.index, values.requires_grad_(True))
    return out


def _pass(inter, coef, alphas: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.enable_grad():
        lower = backward_bound(inter, inter.graph.outputs[0].name, coef, alphas=alphas,
                               cache=PassCache()).lower
        grads = torch.autograd.grad(lower.sum(), [a.values for a in alphas.values()])
    return lower.detach(), list(grads)


@pytest.mark.parametrize(("activation", "seed"), CASES)
def test_column_step_matches_merged_planes_and_encloses_points(activation, seed,
                                                                monkeypatch):
    graph = _net(activation, seed, saturate=True)
    box = _box(seed, 0.6)
    coef = _coef(seed, 5)
    inter = compute_intermediate(graph, box, None, "crown")
    alphas = _random_columns(inter, PassCache(), 5, seed)
    assert alphas, "some node takes column alphas (the new step is exercised)"
    lower, grads = _pass(inter, coef, alphas)
    y = run_graph(graph, _samples(box, 2000, seed).to(F64))[0].to(F64)  # [N, 1, 3]
    values = torch.einsum("sj,nj->ns", coef[0, :, 0], y[:, 0])
    assert torch.all(values >= lower[0] - 1e-6), float((values - lower[0]).min())
    _merged(monkeypatch)
    want, want_grads = _pass(inter, coef, alphas)
    torch.testing.assert_close(lower, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_column_parts_follow_a_replaced_interval():
    """The memoised parts are rebuilt when the node's input interval is replaced in place in
    the same bounds (as the work dtype's view does): the pass matches a fresh cache."""
    graph = _net("Relu", 1, saturate=True)
    box = _box(1, 0.6)
    coef = _coef(1, 5)
    inter = compute_intermediate(graph, box, None, "crown")
    cache = PassCache()
    alphas = _random_columns(inter, cache, 5, 1)
    out = graph.outputs[0].name
    with torch.no_grad():
        backward_bound(inter, out, coef, alphas=alphas, cache=cache)
        for name in alphas:
            value = graph.node(name).dynamic_inputs[0]
            old = inter.bounds[value]
            mid = (old.lower + old.upper) / 2
            inter.bounds[value] = Interval(old.lower, torch.maximum(old.upper, mid + 1.0))
            cache.relaxations(inter.bounds).pop(name, None)  # (what the view does)
        again = backward_bound(inter, out, coef, alphas=alphas, cache=cache).lower
        fresh = backward_bound(inter, out, coef, alphas=alphas, cache=PassCache()).lower
    assert torch.equal(again, fresh)


@pytest.mark.parametrize("seed", range(3))
def test_kinks_take_a_dense_alpha_with_the_same_planes(seed, monkeypatch):
    """A Relu node's alpha is dense where its columns exceed DENSE_KINK_SHARE of its
    positions: at the start it gives the columns' bound (the positions it adds keep their
    planes), and the optimised bound encloses sampled outputs and beats CROWN."""
    from bounds.engine import alpha as alpha_mod

    graph = _net("Relu", seed, saturate=True)
    box = _box(seed, 0.6)
    coef = _coef(seed, 5)
    inter = compute_intermediate(graph, box, None, "crown")
    out = graph.outputs[0].name
    starts = {}
    for share in (1.0, 0.0):  # (columns wherever some position is left out; dense always)
        monkeypatch.setattr(alpha_mod, "DENSE_KINK_SHARE", share)
        found = column_alphas(inter, 5, PassCache())
        starts[share] = found
        with torch.no_grad():
            lower = backward_bound(inter, out, coef, alphas=found, cache=PassCache()).lower
        if share == 1.0:
            columns = lower
            assert any(isinstance(a, ColumnAlpha) for a in found.values())
        else:
            assert not any(isinstance(a, ColumnAlpha) for a in found.values())
            torch.testing.assert_close(lower, columns, rtol=1e-12, atol=1e-12)
    crown = backward_bound(inter, out, coef).lower
    with torch.enable_grad():
        best, _ = alpha_mod.optimize_alpha(inter, out, coef, 10, cache=PassCache())
    assert torch.all(best >= crown)
    y = run_graph(graph, _samples(box, 2000, seed).to(F64))[0].to(F64)
    values = torch.einsum("sj,nj->ns", coef[0, :, 0], y[:, 0])
    assert torch.all(values >= best[0] - 1e-6), float((values - best[0]).min())
