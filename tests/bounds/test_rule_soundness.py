"""Property-based soundness of every registered op rule (DESIGN.md section 6, layer 1).

For each case in ``rule_cases.CASES`` we draw boxes (zero-width, tiny, sign-crossing, the whole
domain, random, straddling special points; seeded numpy), sample points inside them (the two
extreme corners, random vertices, uniform points, special points and their float neighbours),
evaluate the op with a reference that is not our torch code (onnxruntime on a one-node ONNX
model in float64, or numpy/scipy in float64 where onnxruntime has no double kernel), and check
that every value lies in the IBP box and between the relaxation planes (default and random
alpha), and that ``forward`` agrees with the reference. Every numpy reference is checked
against onnxruntime in float32 (tests/bounds/onnx_reference.py builds the models with the ops'
real types); a model onnxruntime rejects fails, except for a missing kernel (NOT_IMPLEMENTED),
which skips naming the op and its input types.

Tolerance, stated once: a value v may exceed a bound by ``ULPS * eps(dtype) * (|v| + scale)``
with ULPS = 4, eps the machine epsilon of the dtype the rule ran in, and ``scale`` a per-case
magnitude floor (2**-10 for elementwise ops; ~|W||x| for affine ops, whose float rounding is
the engine's business). Planes are evaluated in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bounds.engine.rounding import U32, rounding_error
from bounds.graph import Node
from bounds.registry import rules
from bounds.rules.tangents import DomainError
from bounds.types import Interval
from tests.bounds.onnx_reference import (
    NoKernel,
    dynamic_inputs,
    input_name,
    onnx_shape,
    session,
)
from tests.bounds.rule_cases import CASES, KNOWN_ISSUES, RuleCase

ULPS = 4.0
N_BOXES = 48
N_POINTS = 48
DTYPES = (torch.float32, torch.float64)
_PARAMS = [pytest.param(c, d, id=f"{c.label}-{str(d)[6:]}") for c in CASES for d in DTYPES
           if c.nonlinear or d == torch.float64]


def _split(case: RuleCase, x):
    """{position: part} of a batched [B, *in_shape] tensor or Interval (several operands are
    drawn as one flat vector, cut in order of position)."""
    if not case.operands:
        return {case.dyn_pos: x}
    if isinstance(x, Interval):
        lo, hi = _split(case, x.lower), _split(case, x.upper)
        return {pos: Interval(lo[pos], hi[pos]) for pos in lo}
    out, start = {}, 0
    for pos, shape in sorted(case.operands.items()):
        size = int(np.prod(shape))
        out[pos] = x[:, start:start + size].reshape(x.shape[0], *shape)
        start += size
    return out


def _n_inputs(case: RuleCase) -> int:
    return max([*dynamic_inputs(case), *case.consts]) + 1


def _node(case: RuleCase) -> Node:
    inputs = [None] * _n_inputs(case)
    for pos in dynamic_inputs(case):
        inputs[pos] = input_name(case, pos)
    return Node("y", case.op, tuple(inputs), case.shape, dict(case.attrs), dict(case.consts))


def _args(case: RuleCase, x, dtype):
    parts = _split(case, x)
    out = []
    for pos in range(_n_inputs(case)):
        out.append(parts[pos] if pos in parts else torch.as_tensor(case.consts[pos], dtype=dtype))
    return out


# ---------------------------------------------------------------- reference (not our torch code)
def _run_onnx(case: RuleCase, sess, x: np.ndarray) -> np.ndarray:
    if case.operands:
        feed = {input_name(case, pos): part for pos, part in _split(case, x).items()}
    else:
        feed = {"x": x.reshape(-1, *onnx_shape(case))}
    out = sess.run(None, feed)[0]
    return out.reshape(x.shape[0], *case.shape)


def reference(case: RuleCase, x: np.ndarray) -> np.ndarray:
    """Float64 values of the op at points x [N, *in_shape]: numpy/scipy where the case gives
    one (onnxruntime's double LeakyRelu, for one, is only float32-accurate), else onnxruntime."""
    if case.numpy_ref is not None:
        return case.numpy_ref(x.astype(np.float64))
    sess = session(case.label, True)
    return _run_onnx(case, sess, x.astype(np.float64))


# ---------------------------------------------------------------- boxes and points
def _points(rng, n, lo, hi):
    """Mixture of uniform and log-scaled points in [lo, hi]."""
    uni = rng.uniform(lo, hi, n)
    top = max(abs(lo), abs(hi), 1e-3)
    logs = 10.0 ** rng.uniform(-4, math.log10(top), n) * rng.choice([-1.0, 1.0], n)
    return np.where(rng.random(n) < 0.5, uni, np.clip(logs, lo, hi))


def boxes(case: RuleCase, rng, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """[N_BOXES, *in_shape] lower/upper from the families named in the module docstring."""
    lo, hi = case.domain
    n = N_BOXES * int(np.prod(case.in_shape))
    fam = rng.integers(0, 6, n)
    p, q = _points(rng, n, lo, hi), _points(rng, n, lo, hi)
    tiny = np.clip(p + 1e-7 * (1 + np.abs(p)) * rng.random(n), lo, hi)
    sp = [s for s in case.specials if lo <= s <= hi] or [lo]
    s = rng.choice(sp, n)
    w1, w2 = 10.0 ** rng.uniform(-6, 1, n), 10.0 ** rng.uniform(-6, 1, n)
    if lo < 0 < hi:
        cross = (-(10.0 ** rng.uniform(-3, math.log10(-lo), n)),
                 10.0 ** rng.uniform(-3, math.log10(hi), n))
    else:
        cross = (np.minimum(p, q), np.maximum(p, q))
    lows = [p, p, cross[0], np.full(n, lo), np.minimum(p, q), np.clip(s - w1, lo, hi)]
    highs = [p, tiny, cross[1], np.full(n, hi), np.maximum(p, q), np.clip(s + w2, lo, hi)]
    low = np.choose(fam, lows).reshape(N_BOXES, *case.in_shape)
    high = np.choose(fam, highs).reshape(N_BOXES, *case.in_shape)
    return torch.as_tensor(low, dtype=dtype), torch.as_tensor(high, dtype=dtype)


def sample(case: RuleCase, rng, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[N_POINTS, *lower.shape] points of the boxes: corners, vertices, uniform, specials."""
    shape = (N_POINTS, *lower.shape)
    t = torch.as_tensor(rng.random(shape))
    t[0], t[1] = 0.0, 1.0
    t[2:N_POINTS // 4] = t[2:N_POINTS // 4].round()
    l64, u64 = lower.double(), upper.double()
    x = (l64 + t * (u64 - l64)).to(lower.dtype)
    k = N_POINTS - 3 * len(case.specials)
    for i, s in enumerate(case.specials):
        pt = torch.full_like(lower, s)
        for j, v in enumerate((pt, torch.nextafter(pt, pt - 1), torch.nextafter(pt, pt + 1))):
            x[k + 3 * i + j] = v
    return torch.minimum(torch.maximum(x, lower), upper)


def _tol(case: RuleCase, y: torch.Tensor, dtype) -> torch.Tensor:
    return ULPS * torch.finfo(dtype).eps * (y.abs() + case.scale)


def _setup(case: RuleCase, dtype, seed: int):
    rng = np.random.default_rng(seed)
    lower, upper = boxes(case, rng, dtype)
    x = sample(case, rng, lower, upper)
    flat = x.reshape(-1, *case.in_shape)
    y = torch.as_tensor(reference(case, flat.double().numpy())).reshape(
        N_POINTS, N_BOXES, *case.shape)
    return rng, lower, upper, x, y


def _known(case: RuleCase, check: str, dtype):
    """A strict xfail for a check listed in KNOWN_ISSUES: it must fail (xfail, keeping the
    evidence in the reason); a listed check that passes fails the test, so that a fix removes
    its entry."""
    reason = KNOWN_ISSUES.get((case.label, check, str(dtype)[6:]))

    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, kind, err, tb):
            if reason and kind is not None and issubclass(kind, pytest.fail.Exception):
                pytest.xfail(f"known issue: {reason} -- {err}")
            if reason and kind is None:
                pytest.fail(f"KNOWN_ISSUES lists {case.label} {check} ({dtype}) but it passes: "
                            "remove the entry")
            return False

    return _Ctx()


def _assert_within(case, what, y, lo, hi, dtype, x, ulps=ULPS):
    tol = _tol(case, y, dtype) * (ulps / ULPS)
    bad = (y < lo - tol) | (y > hi + tol)
    if bool(bad.any()):
        i = tuple(int(v) for v in bad.nonzero()[0])
        pytest.fail(f"{case.label} {what} ({dtype}): value {y[i].item()!r} at index {i} "
                    f"outside [{lo.expand_as(y)[i].item()!r}, {hi.expand_as(y)[i].item()!r}]"
                    + (f" at x = {x[i].item()!r}" if x.shape == y.shape else ""))



# ---------------------------------------------------------------- the properties
def test_every_registered_op_has_a_case():
    """Meta-test: a registered op without a case fails."""
    missing = sorted(set(rules().keys()) - {c.op for c in CASES})
    assert not missing, f"registered ops without a soundness case: {missing}"


def test_cases_name_registered_ops():
    registered = set(rules().keys())
    unknown = sorted({c.op for c in CASES} - registered)
    assert not unknown, f"cases for ops that are not registered: {unknown}"


def test_known_issues_name_cases():
    """Every KNOWN_ISSUES entry names a case, a check and a dtype that exist."""
    labels = {c.label for c in CASES}
    checks = {"ibp", "relax", "onnxruntime"}
    bad = [k for k in KNOWN_ISSUES
           if k[0] not in labels or k[1] not in checks or k[2] not in ("float32", "float64")]
    assert not bad, f"KNOWN_ISSUES entries that match no check: {bad}"


def _rule(case):
    return rules().get(case.op)


@pytest.mark.parametrize("case,dtype", _PARAMS)
def test_ibp_encloses_reference(case: RuleCase, dtype):
    rule = _rule(case)
    _, lower, upper, x, y = _setup(case, dtype, seed=11)
    out = rule.ibp(_node(case), _args(case, Interval(lower, upper), dtype))
    assert out.lower.dtype == dtype and out.upper.dtype == dtype
    assert torch.isfinite(out.lower).all() and torch.isfinite(out.upper).all()
    with _known(case, "ibp", dtype):
        _assert_within(case, "IBP", y, out.lower.double(), out.upper.double(), dtype, x)


@pytest.mark.parametrize("case,dtype", _PARAMS)
def test_forward_matches_reference(case: RuleCase, dtype):
    rule = _rule(case)
    _, _, _, x, y = _setup(case, dtype, seed=12)
    flat = x.reshape(-1, *case.in_shape)
    got = rule.forward(_node(case), _args(case, flat, dtype)).double().reshape(y.shape)
    # forward is a concrete evaluation, not a bound: it may be off by 16 ulps (4 x ULPS)
    _assert_within(case, "forward", y, got, got, dtype, x, ulps=4 * ULPS)


def _check_planes(case, rel, x, y, dtype, what):
    for t in (rel.lower_slope, rel.lower_offset, rel.upper_slope, rel.upper_offset):
        assert t.dtype == dtype, f"{case.label} {what}: relaxation dtype {t.dtype}"
        assert torch.isfinite(t).all(), f"{case.label} {what}: non-finite relaxation"
    xd = x.double()
    lo = rel.lower_slope.double() * xd + rel.lower_offset.double()
    hi = rel.upper_slope.double() * xd + rel.upper_offset.double()
    _assert_within(case, what, y, lo, hi, dtype, x)


def _has_relax(case: RuleCase) -> bool:
    return case.nonlinear and rules().get(case.op).relax is not None


@pytest.mark.parametrize("case,dtype", [p for p in _PARAMS if _has_relax(p.values[0])])
def test_relaxation_planes_enclose_reference(case: RuleCase, dtype):
    rule = _rule(case)
    rng, lower, upper, x, y = _setup(case, dtype, seed=13)
    node = _node(case)
    with _known(case, "relax", dtype):
        _check_planes(case, rule.relax(node, lower, upper), x, y, dtype, "relax(alpha=None)")
    for k in range(2):
        alpha = torch.as_tensor(rng.random(lower.shape), dtype=dtype)
        if k == 1:
            alpha = (alpha > 0.5).to(dtype)  # the ends of the alpha range
        rel = rule.relax(node, lower, upper, alpha)
        _check_planes(case, rel, x, y, dtype, f"relax(random alpha #{k})")


@pytest.mark.parametrize("case", [c for c in CASES if _has_relax(c)], ids=lambda c: c.label)
def test_relaxation_with_spec_axis_alpha(case: RuleCase):
    """The alpha-CROWN layout: bounds [B, 1, ...], alpha [B, S, ...]; alpha gets a gradient."""
    rule = _rule(case)
    rng, lower, upper, x, y = _setup(case, torch.float64, seed=14)
    alpha = torch.as_tensor(rng.random((N_BOXES, 3, *case.in_shape))).requires_grad_(True)
    rel = rule.relax(_node(case), lower.unsqueeze(1), upper.unsqueeze(1), alpha)
    for s in range(3):
        part = type(rel)(*(t.expand(N_BOXES, 3, *case.in_shape)[:, s].detach()
                           for t in (rel.lower_slope, rel.lower_offset,
                                     rel.upper_slope, rel.upper_offset)))
        _check_planes(case, part, x, y, torch.float64, f"relax(spec alpha {s})")
    total = rel.lower_offset.sum() + rel.upper_offset.sum() + rel.lower_slope.sum()
    if total.requires_grad:
        total.backward()
        assert alpha.grad is None or torch.isfinite(alpha.grad).all()


_DOMAIN_ERRORS = [
    ("Log", {}, (-1.0, 1.0)), ("Log", {}, (0.0, 1.0)), ("Sqrt", {}, (-1.0, 0.5)),
    ("Reciprocal", {}, (-1.0, 1.0)), ("Pow", {"exponent": -1.0}, (-1.0, 2.0)),
    ("Pow", {"exponent": 0.5}, (-1.0, 2.0)), ("Pow", {"exponent": -0.5}, (0.0, 2.0)),
]


@pytest.mark.parametrize("op,attrs,box", _DOMAIN_ERRORS, ids=lambda v: str(v))
def test_domain_violation_raises(op, attrs, box):
    rule = rules().get(op)
    node = Node("y", op, ("x",), (2,), attrs)
    lower = torch.tensor([[0.5, box[0]]], dtype=torch.float64)
    upper = torch.tensor([[1.0, box[1]]], dtype=torch.float64)
    with pytest.raises(DomainError, match=op):
        rule.ibp(node, [Interval(lower, upper)])
    with pytest.raises(ValueError, match=r"index \(0, 1\)"):
        rule.relax(node, lower, upper)


def test_exp_overflow_is_loud_not_nan():
    rule = rules().get("Exp")
    node = Node("y", "Exp", ("x",), (1,))
    lower, upper = torch.tensor([[-1e4]]), torch.tensor([[1e4]])
    with pytest.raises(DomainError, match="Exp"):
        rule.relax(node, lower, upper)
    assert rule.ibp(node, [Interval(lower, upper)]).upper.isinf().all()


def _allowance(case: RuleCase, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The rounding allowance the engine gives the node at the points x (values y)."""
    flat = x.reshape(-1, *case.in_shape).double()
    args = _args(case, Interval(flat, flat), torch.float64)
    out = Interval(y.reshape(-1, *case.shape), y.reshape(-1, *case.shape))
    delta = rounding_error(_node(case), _rule(case), args, out, case.in_shape)
    floor = U32 * (y.abs() + case.scale)
    return floor if delta is None else torch.maximum(delta.reshape(y.shape), floor)


# DynamicSlice's ends = starts + k and ScatterWindow's sliced Range indices need more than one
# ONNX node; their semantics are checked in onnxruntime by tests/onnx_import/test_dynamic_slice.py
# and tests/onnx_import/test_scatter_window.py. PairArgMax exists only in rewritten graphs
# (tests/bounds/test_argmax_pairs.py runs those against onnxruntime), and so does Slack
# (LayerNormalization's variance: tests/onnx_import's normalisation cases), and so does
# CentredVariance (tests/bounds/test_centred_variance.py); TreeLeaves is
# one part of a tree ensemble (tests/onnx_import/test_tree_ensembles.py); GridSample's cases
# lack ONNX's batch axis on the grid (tests/onnx_import/test_grid_sample.py).
@pytest.mark.parametrize("case", [c for c in CASES if c.numpy_ref is not None
                                  and c.op not in ("DynamicSlice", "ScatterWindow",
                                                   "PairArgMax", "Slack", "TreeLeaves",
                                                   "GridSample", "CentredVariance")],
                         ids=lambda c: c.label)
def test_numpy_reference_matches_onnxruntime(case: RuleCase):
    """The numpy/scipy references mean what onnxruntime (float32, the deployed runtime) means."""
    _, _, _, x, y = _setup(case, torch.float32, seed=15)
    try:
        sess = session(case.label, False)
    except NoKernel as err:
        pytest.skip(str(err))
    flat = x.reshape(-1, *case.in_shape).numpy()
    got = torch.as_tensor(_run_onnx(case, sess, flat)).double().reshape(y.shape)
    # onnxruntime's float32 kernels promise no accuracy (Sigmoid and Gelu are off by up to 5%
    # relative in the tails); hold them to the engine's own allowance for the node
    # (bounds/engine/rounding.py: rounding_error of the node at these points), at least one
    # float32 rounding of |v| + scale (scale: the case's magnitude floor, for reductions)
    tol = _allowance(case, x, y)
    with _known(case, "onnxruntime", torch.float32):
        _assert_within(case, "onnxruntime float32", y, got - tol, got + tol, torch.float32, x)
