"""alpha-CROWN's guide passes on chains of affine nodes and S-shaped activations
(``bounds.engine.guide``): the same bound and alpha gradient as the engine's pass (up to the
planes' rounding margins) for dense and column alphas; the bound reported is the engine's
pass with the alphas found (a guide that lies changes nothing reported), encloses sampled
points and is never looser than CROWN; graphs that are not such chains take the engine."""

from __future__ import annotations

import pytest
import torch

from bounds.engine import alpha as alpha_mod
from bounds.engine import guide as guide_mod
from bounds.engine import guide_steps
from bounds.engine.alpha import _Start, optimize_alpha
from bounds.engine.crown import backward_bound
from bounds.engine.forward import run_graph
from bounds.engine.guide import chain, chain_guide
from bounds.engine.intermediate import compute_intermediate
from bounds.engine.results import PassCache
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from tests.bounds.test_alpha_passes import _box, _net, _samples
from tests.bounds.test_alpha_work_dtype import _sampled_min, _spec

F64 = torch.float64


def _setup(activation: str, seed: int, start: str, rows: int = 6, sparse: bool = True):
    graph = _net(activation, seed)
    inter = compute_intermediate(graph, _box(seed, 0.4), None, "crown")
    gen = torch.Generator().manual_seed(seed)
    coef = torch.randn((1, rows, *graph.shape_of(start)), generator=gen, dtype=F64)
    cache = PassCache()
    s = _Start(inter, start, rows, cache, None, sparse)
    with torch.no_grad():
        for v in s.params.values():
            v.uniform_(0, 1, generator=gen)
    return inter, cache, coef, s


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh", "Atan", "Erf"])
@pytest.mark.parametrize("start", ["lin1", "lin2", "lin3"])
@pytest.mark.parametrize("sparse", [True, False])
def test_guide_matches_the_engine_pass_and_its_gradient(activation, start, sparse,
                                                        monkeypatch):
    # (a large share leaves some positions without alpha on these small nets)
    monkeypatch.setattr(alpha_mod, "COLUMN_GAP_SHARE", 0.3)
    inter, cache, coef, s = _setup(activation, 4, start, sparse=sparse)
    assert s.params
    if sparse:
        assert any(k in s.columns for k in s.params)  # (some node has column alphas)
    guide = chain_guide(inter, cache, start, coef, {k: s.columns.get(k) for k in s.params})
    assert guide is not None
    dense = {k: v.detach().clone().requires_grad_(True)
             for k, v in s.dense(s.params).items()}
    with torch.enable_grad():
        engine = backward_bound(inter, start, coef, alphas=s.alphas(), cache=cache).lower
        engine.sum().backward()
        ours = guide.lower(dense)
        ours.sum().backward()
    scale = float(engine.abs().max())
    torch.testing.assert_close(ours, engine, rtol=0, atol=1e-9 * scale)
    for k, p in s.params.items():
        grad = dense[k].grad.flatten(2)
        if k in s.columns:
            assert not bool(grad[:, :, _others(grad.shape[-1], s.columns[k])].any())
            grad = grad[:, :, s.columns[k]]
        torch.testing.assert_close(grad, p.grad.flatten(2), rtol=1e-6, atol=1e-9 * scale)


def _others(n: int, idx: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    return keep.nonzero().flatten()


def test_graphs_off_the_chain_take_the_engine():
    from tests.bounds.test_conv_patches import _Net

    assert chain(_net("Sigmoid", 1), "lin3") is not None
    assert chain(_net("Relu", 1), "lin3") is None  # (Relu: no guide)
    n = _Net((1, 2, 8, 8), 0)
    conv = n.add("s0", "Sigmoid", (n.conv("c0", "x", 3),), n.shapes["c0"])
    graph = n.graph(n.conv("c1", conv, 2))
    assert chain(graph, "c1") is None  # (convolutional values: the engine's windows)


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("f32", [True, False])
def test_guided_alpha_encloses_samples_and_beats_crown(activation, seed, f32):
    graph, box = _net(activation, seed), _box(seed, 0.4)
    coef, rhs = _spec(seed)
    crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    res = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha", alpha_iterations=10,
                                                          work_float32=f32)).lower
    assert torch.all(res >= crown)
    assert torch.all(res[0] <= _sampled_min(graph, box, coef, rhs, seed) + 1e-6)
    inter_alpha = bound_spec(graph, box, coef, rhs, BoundOptions(
        method="alpha", alpha_iterations=10, intermediate_alpha_iterations=3,
        work_float32=f32)).lower
    assert torch.all(inter_alpha[0] <= _sampled_min(graph, box, coef, rhs, seed) + 1e-6)


def test_a_lying_guide_changes_nothing_reported(monkeypatch):
    """optimize_alpha's bound is max(CROWN, the engine's pass with the alphas found): a guide
    that claims +1e6 everywhere moves no reported bound above sampled points."""
    graph, box = _net("Sigmoid", 1), _box(1, 0.4)
    inter = compute_intermediate(graph, box, None, "crown")
    coef, rhs = _spec(1)
    coef = coef.reshape(1, 5, 1, 4)
    out = graph.outputs[0].name
    crown = backward_bound(inter, out, coef).lower
    built = []
    real = guide_mod.ChainGuide.lower

    def lying(self, alphas):
        built.append(self)
        return real(self, alphas) + 1e6

    monkeypatch.setattr(guide_mod.ChainGuide, "lower", lying)
    passes = []
    real_pass = alpha_mod.backward_bound

    def spy(*args, **kwargs):
        res = real_pass(*args, **kwargs)
        passes.append(res.lower)
        return res

    monkeypatch.setattr(alpha_mod, "backward_bound", spy)
    with torch.enable_grad():
        lower, _ = optimize_alpha(inter, out, coef, 6, cache=PassCache(), known=crown)
    assert built and len(passes) == 1
    assert torch.equal(lower, torch.maximum(crown, passes[0]))
    assert torch.all(lower[0] <= _sampled_min(graph, box, coef.reshape(1, 5, 4), rhs, 1)
                     + 1e-6)


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("seed", range(3))
def test_default_pass_only_where_the_guide_does_not_clearly_win(activation, seed,
                                                                 monkeypatch):
    """Without a known bound, the engine's default pass runs only when the guide's best fails
    to beat the guide's default pass by GUIDE_MARGIN in some row; either way the bound is
    never looser than the default pass and encloses sampled points."""
    graph, box = _net(activation, seed), _box(seed, 0.4)
    inter = compute_intermediate(graph, box, None, "crown")
    coef = torch.cat([torch.eye(24), -torch.eye(24)]).reshape(1, 48, 1, 24).to(F64)
    default = backward_bound(inter, "lin2", coef).lower
    calls = []
    real = alpha_mod._default_lower

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(alpha_mod, "_default_lower", spy)
    with torch.enable_grad():
        lower, _ = optimize_alpha(inter, "lin2", coef, 8, cache=PassCache())
    assert torch.all(lower >= default) and len(calls) <= 1
    values = run_graph(graph, _samples(box, 2000, seed), keep_all=True)["lin2"].to(F64)
    sampled = torch.cat([values, -values], dim=-1).reshape(-1, 48).min(0).values
    for margin, passes in ((-1e9, 0), (1e9, 1)):  # the guide always / never wins clearly
        monkeypatch.setattr(alpha_mod, "GUIDE_MARGIN", margin)
        calls.clear()
        with torch.enable_grad():
            lower, _ = optimize_alpha(inter, "lin2", coef, 8, cache=PassCache())
        assert len(calls) == passes
        assert torch.all(lower[0] <= sampled + 1e-6)
        if passes:
            assert torch.all(lower >= default)


_ULPS = 64 * torch.finfo(F64).eps


def test_default_pass_over_the_rows_that_need_it(monkeypatch):
    """On large passes the engine's default pass runs over the rows where the guide does not
    clearly win, and only those: the others keep alpha's pass; those are never looser than
    the default pass (but for the last bits) and every row encloses sampled points."""
    graph, box = _net("Sigmoid", 2), _box(2, 0.4)
    inter = compute_intermediate(graph, box, None, "crown")
    coef = torch.cat([torch.eye(24), -torch.eye(24)]).reshape(1, 48, 1, 24).to(F64)
    default = backward_bound(inter, "lin2", coef).lower
    guide_best = torch.full((1, 48), 10.0, dtype=F64)  # the guide "wins" every row ...
    guide_best[0, 5:9] = -10.0  # ... but these four
    real_max = alpha_mod.maximize

    def fake_max(*args, **kwargs):
        best, found = real_max(*args, **kwargs)
        return guide_best.to(best.dtype), found

    rows_seen = []
    real = alpha_mod._default_lower

    def spy(inter_, start, c, cache):
        rows_seen.append(c.shape[1])
        return real(inter_, start, c, cache)

    monkeypatch.setattr(alpha_mod, "MIN_WORK_ELEMENTS", 1)  # (row subsets on a small net)
    monkeypatch.setattr(alpha_mod, "maximize", fake_max)
    monkeypatch.setattr(alpha_mod, "_default_lower", spy)
    with torch.enable_grad():
        lower, _ = optimize_alpha(inter, "lin2", coef, 4, cache=PassCache())
    assert rows_seen == [4]
    assert torch.all(lower[0, 5:9] >= default[0, 5:9] - _ULPS * (1 + default[0, 5:9].abs()))
    values = run_graph(graph, _samples(box, 2000, 2), keep_all=True)["lin2"].to(F64)
    sampled = torch.cat([values, -values], dim=-1).reshape(-1, 48).min(0).values
    assert torch.all(lower[0] <= sampled + 1e-6)


def test_no_iterations_with_column_alphas(monkeypatch):
    """iterations=0 on sparse (column) alphas: the engine's pass with the initial alphas
    (a ColumnAlpha was detached as a tensor before: AttributeError)."""
    monkeypatch.setattr(alpha_mod, "COLUMN_GAP_SHARE", 0.3)
    inter, cache, coef, s = _setup("Sigmoid", 4, "lin3")
    assert s.columns
    lower, alphas = optimize_alpha(inter, "lin3", coef, 0, cache=cache)
    start = _Start(inter, "lin3", coef.shape[1], cache, None, True)
    expected = backward_bound(inter, "lin3", coef, alphas=start.alphas(), cache=cache).lower
    assert torch.equal(lower, expected)
    assert all(v.shape == (1, coef.shape[1], 1, 24) for v in alphas.values())


def test_guided_alphas_returned_dense_keep_the_initial_value_off_the_columns(monkeypatch):
    """The guided optimisation returns its dense alphas as found: positions without an alpha
    keep the rule's initial value (no gradient reaches them), columns the values found, and
    the engine's pass with them gives the bound returned or less (max with the default)."""
    monkeypatch.setattr(alpha_mod, "COLUMN_GAP_SHARE", 0.3)
    inter, cache, coef, s = _setup("Sigmoid", 4, "lin3")
    assert s.columns
    with torch.enable_grad():
        lower, alphas = optimize_alpha(inter, "lin3", coef, 6, cache=cache)
    start = _Start(inter, "lin3", coef.shape[1], cache, None, True)
    for k, v in alphas.items():
        assert v.shape == (1, coef.shape[1], 1, 24) and v.dtype == F64
        initial = start.dense(start.params)[k]
        if k in start.columns:
            off = _others(24, start.columns[k])
            assert torch.equal(v.flatten(2)[:, :, off], initial.flatten(2)[:, :, off])
    cols = {k: v.flatten(2)[:, :, start.columns[k]] if k in start.columns else v
            for k, v in alphas.items()}
    again = backward_bound(inter, "lin3", coef, alphas=start.alphas(cols), cache=cache).lower
    assert torch.all(again <= lower)


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("start", ["lin2", "lin3"])
def test_guide_default_pass_matches_the_engine_default_pass(activation, start, monkeypatch):
    """``lower({})`` on a guide built for alphas (steps with folded rounding allowances, the
    folded affine tail) is the engine's default pass up to the planes' rounding margins."""
    monkeypatch.setattr(alpha_mod, "COLUMN_GAP_SHARE", 0.3)
    inter, cache, coef, s = _setup(activation, 5, start)
    guide = chain_guide(inter, cache, start, coef, {k: s.columns.get(k) for k in s.params})
    assert guide is not None and guide.tail is not None
    with torch.no_grad():
        engine = backward_bound(inter, start, coef, cache=cache).lower
        ours = guide.lower({})
    torch.testing.assert_close(ours, engine, rtol=0, atol=1e-9 * float(engine.abs().max()))


def test_guides_over_the_same_bounds_share_their_activation_steps(monkeypatch):
    """A second guide over the same bounds and alpha positions reuses the S-shaped steps
    kept in the cache (one build per bound pass); other positions build anew, and either
    guide still matches the engine's pass."""
    monkeypatch.setattr(alpha_mod, "COLUMN_GAP_SHARE", 0.3)
    inter, cache, coef, s = _setup("Sigmoid", 4, "lin3")
    builds = []
    real = guide_steps._sshape_step

    def spy(*args, **kwargs):
        builds.append(args[2].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(guide_steps, "_sshape_step", spy)
    columns = {k: s.columns.get(k) for k in s.params}
    dense = {k: v.detach().clone() for k, v in s.dense(s.params).items()}
    engine = backward_bound(inter, "lin3", coef, alphas=s.alphas(), cache=cache).lower
    first = chain_guide(inter, cache, "lin3", coef, columns)
    n = len(builds)
    assert n == len(columns)
    second = chain_guide(inter, cache, "lin3", coef, columns)
    assert len(builds) == n  # (kept)
    other = {k: torch.arange(3) for k in columns}  # (other positions: built anew)
    chain_guide(inter, cache, "lin3", coef, other)
    assert len(builds) == 2 * n
    scale = float(engine.abs().max())
    for guide in (first, second):
        torch.testing.assert_close(guide.lower(dense), engine, rtol=0, atol=1e-9 * scale)


def test_batched_tangents_give_the_same_guide(monkeypatch):
    """A guide with few rows takes its activations' tangent planes in one batch per op: the
    same bound and alpha gradients as one call per node."""
    monkeypatch.setattr(alpha_mod, "COLUMN_GAP_SHARE", 0.3)
    inter, cache, coef, s = _setup("Tanh", 6, "lin3")
    columns = {k: s.columns.get(k) for k in s.params}
    out = []
    for limit in (0, 1 << 30):
        monkeypatch.setattr(guide_mod, "BATCH_ELEMENTS", limit)
        guide = chain_guide(inter, PassCache(), "lin3", coef, columns)
        assert bool(guide.batches) == bool(limit)
        dense = {k: v.detach().clone().requires_grad_(True)
                 for k, v in s.dense(s.params).items()}
        with torch.enable_grad():
            lower = guide.lower(dense)
            lower.sum().backward()
        out.append((lower.detach(), [dense[k].grad for k in sorted(dense)]))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-12, atol=1e-12)
    for g0, g1 in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-12, atol=1e-12)
