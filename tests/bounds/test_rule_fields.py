"""Meta-test: every rule declares what the engines need to know about its op, and coherently.

``OpRule.alpha``, ``rounding``, ``split`` and ``milp`` have no defaults (a rule that omits one
does not construct); here we check that what each rule holds is usable by its consumers, and
that the declarative parts (MILP kink forms, shape traits, domains) agree with the op's values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bounds.graph import Node
from bounds.registry import Alpha, Milp, OpRule, OpTraits, Rounding, Split, rules
from tests.bounds.rule_cases import CASES

_RULES = [pytest.param(rule, id=op) for op, rule in rules().items()]
_REQUIRED = ("alpha", "rounding", "split", "milp")


def test_fields_have_no_default():
    """Leaving out one of the op-knowledge fields is an error, never a silent default."""
    fields = {f.name: f for f in dataclasses.fields(OpRule)}
    for name in _REQUIRED:
        f = fields[name]
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    with pytest.raises(TypeError, match="rounding"):
        OpRule("X", forward=lambda node, args: args[0], alpha=None, split=None,
               milp=Milp("none"))


@pytest.mark.parametrize("rule", _RULES)
def test_rule_declares_each_field(rule: OpRule):
    assert isinstance(rule.traits, OpTraits)
    assert isinstance(rule.rounding, Rounding), rule.op
    assert rule.alpha is None or isinstance(rule.alpha, Alpha), rule.op
    assert rule.split is None or isinstance(rule.split, Split), rule.op
    assert isinstance(rule.milp, Milp), rule.op
    assert rule.doc.strip(), f"{rule.op}: no doc"
    lo, hi = rule.traits.domain
    assert lo < hi, rule.op


@pytest.mark.parametrize("rule", _RULES)
def test_alpha_is_usable(rule: OpRule):
    spec = rule.alpha
    if spec is None:
        return
    assert spec.low < spec.high and callable(spec.init) and callable(spec.applies)
    if spec.structured:
        assert rule.backward is not None, f"{rule.op}: a structured alpha needs a backward"
    else:
        assert rule.relax is not None and rule.traits.elementwise, rule.op
        lower = torch.tensor([[-2.0, -1.0, 0.5]], dtype=torch.float64)
        start = spec.init(lower, lower + 3.0, {})
        assert start.shape == lower.shape
        assert bool(((start >= spec.low) & (start <= spec.high)).all()), rule.op


@pytest.mark.parametrize("rule", _RULES)
def test_split_is_usable(rule: OpRule):
    split = rule.split
    if split is None:
        return
    assert split.point in ("zero", "kinks", "table", "midpoint"), rule.op
    if split.point == "kinks":  # the kinks are read from the exact piecewise-linear form
        assert rule.milp.kind == "kinks" and rule.traits.piecewise_linear, rule.op
    if split.search == "sign":  # exact once the sign is fixed: every kink at 0
        assert rule.milp.kind == "kinks" and rule.milp.zero_kink, rule.op
    assert split.search in ("sign", "interval", "operands", "none"), rule.op
    assert (split.point == "table") == bool(split.tables), rule.op
    if split.search in ("sign", "interval"):
        assert rule.relax is not None and rule.traits.elementwise, rule.op
    if split.search == "operands":
        assert rule.alpha is not None and rule.alpha.structured, rule.op
    for grid in split.tables:
        assert grid.lo < grid.hi and grid.step > 0
        assert split.table_key(dict(grid.attrs)) == grid.key, rule.op


def test_table_keys_are_unique():
    keys = [g.key for _, r in rules().items() if r.split is not None for g in r.split.tables]
    assert len(keys) == len(set(keys)), keys


@pytest.mark.parametrize("rule", _RULES)
def test_milp_matches_the_traits(rule: OpRule):
    kind = rule.milp.kind
    assert kind in ("affine", "kinks", "window_max", "argmax", "leaves", "relaxed", "none"), \
        rule.op
    assert (kind == "affine") == rule.traits.affine, rule.op
    if kind == "relaxed":
        assert rule.relax is not None and rule.traits.elementwise, rule.op
    if kind == "kinks":
        assert callable(rule.milp.kinks) and rule.traits.piecewise_linear, rule.op
    else:
        assert rule.milp.kinks is None and not rule.milp.zero_kink, rule.op


def _unary_cases(pred):
    return [pytest.param(c, id=c.label) for c in CASES
            if not c.operands and not c.consts and c.op in rules() and pred(rules().get(c.op))]


def _points(case, n=401) -> torch.Tensor:
    lo, hi = (max(v, -50.0) if v < 0 else min(v, 50.0) for v in case.domain)
    grid = np.concatenate([np.linspace(lo, hi, n), np.asarray(case.specials, float)])
    grid = grid[(grid >= case.domain[0]) & (grid <= case.domain[1])]
    return torch.as_tensor(grid, dtype=torch.float64).reshape(-1, 1)


def _node(case) -> Node:
    return Node("y", case.op, ("x",), (1,), dict(case.attrs))


@pytest.mark.parametrize("case", _unary_cases(lambda r: r.milp.kind == "kinks"))
def test_kinks_form_is_the_op(case):
    """The MILP's piecewise-linear form c + s x + sum w relu(x - t) equals ``forward``."""
    rule = rules().get(case.op)
    x = _points(case)
    form = rule.milp.kinks(dict(case.attrs))
    y = form.const + form.slope * x
    for weight, at in form.terms:
        y = y + weight * torch.relu(x - at)
    torch.testing.assert_close(y, rule.forward(_node(case), [x]).double())
    if rule.milp.zero_kink:
        assert all(at == 0.0 for _, at in form.terms), case.label


@pytest.mark.parametrize("case", _unary_cases(lambda r: r.traits.convex or r.traits.concave))
def test_convexity_traits_hold(case):
    """convex: f(mid) <= the chord's mid value on pairs of points (concave: >=)."""
    rule = rules().get(case.op)
    x = _points(case, 101)
    a, b = x.reshape(-1, 1), x.reshape(1, -1)
    f = lambda t: rule.forward(_node(case), [t.reshape(-1, 1)]).double().reshape(t.shape)  # noqa: E731
    gap = f((a + b) / 2) - (f(a.expand_as(b * a)) + f(b.expand_as(b * a))) / 2
    tol = 1e-12 * (1 + f(a.expand_as(b * a)).abs() + f(b.expand_as(b * a)).abs())
    if rule.traits.convex:
        assert bool((gap <= tol).all()), case.label
    if rule.traits.concave:
        assert bool((gap >= -tol).all()), case.label


@pytest.mark.parametrize("case", [pytest.param(c, id=c.label) for c in CASES])
def test_case_domain_inside_the_rule_domain(case):
    lo, hi = rules().get(case.op).traits.domain
    assert lo <= case.domain[0] and case.domain[1] <= hi, case.label


@pytest.mark.parametrize("attrs", [{"min": -1.0, "max": 2.0}, {"min": 0.0, "max": 6.0},
                                   {"min": 0.5}, {"max": -0.25}])
def test_clip_alpha_starts_at_the_planes_without_alpha(attrs):
    """alpha-CROWN starts where CROWN is: Clip's initial alpha (from the node's kinks) gives
    the planes its relaxation picks without one, on intervals holding no, one or both
    kinks."""
    rule = rules().get("Clip")
    gen = torch.Generator().manual_seed(5)
    lower = (torch.rand(2, 200, generator=gen, dtype=torch.float64) - 0.5) * 16
    upper = lower + torch.rand(2, 200, generator=gen, dtype=torch.float64) * 10
    node = Node("y", "Clip", ("x",), (200,), attrs)
    start = rule.alpha.init(lower, upper, attrs)
    assert bool(((start >= rule.alpha.low) & (start <= rule.alpha.high)).all())
    default, started = rule.relax(node, lower, upper), rule.relax(node, lower, upper, start)
    for field in ("lower_slope", "lower_offset", "upper_slope", "upper_offset"):
        torch.testing.assert_close(getattr(started, field), getattr(default, field),
                                   rtol=0, atol=1e-12)
