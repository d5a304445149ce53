"""Fast slice of the soundness fuzzing campaign (benchmarks/fuzz_campaign.py runs the rest):
every ``nncert verify`` method against the exact MILP oracle on random small networks and
properties, most of them placed just beside their decision boundary."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fuzzing import make_case, run_case
from fuzzing.cases import NET_KINDS, ort_outputs
from fuzzing.harness import check_counterexample
from fuzzing.nets import random_mlp
from fuzzing.specs import SPEC_KINDS, random_prop, to_vnnlib
from verifier.spec import parse_vnnlib

SEED = 2024
SLICE = range(20)
TIMEOUT_S = 0.5


@functools.cache
def _case(index: int):
    return make_case(SEED, index)


@pytest.mark.parametrize("index", SLICE)
def test_methods_agree_with_milp_oracle(index):
    case = _case(index)
    res = run_case(case, timeout=TIMEOUT_S)
    assert not res.disagreements, (case.case_id, case.kind, res)


def test_slice_covers_every_kind_and_both_answers():
    cases = [_case(i) for i in SLICE]
    assert {c.net.kind for c in cases} == set(NET_KINDS)
    assert {c.prop.kind for c in cases} == set(SPEC_KINDS)
    assert {c.margin <= 0 for c in cases} == {True, False}
    assert sum(c.mode == "near" for c in cases) >= len(cases) // 3


def test_case_generation_is_deterministic():
    a, b = make_case(SEED, 5), make_case(SEED, 5)
    assert a.net.onnx_bytes == b.net.onnx_bytes and a.vnnlib == b.vnnlib


@pytest.mark.parametrize("seed", range(6))
def test_relu_twin_computes_the_mixed_network(seed):
    net = random_mlp(np.random.default_rng(seed), mixed=True)
    xs = np.random.default_rng(seed).uniform(-2, 2, (16, net.n_in))
    got = ort_outputs(net.onnx_bytes, xs, net.input_shape)
    want = ort_outputs(net.oracle_bytes, xs, net.input_shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", SPEC_KINDS)
def test_vnnlib_text_parses_to_the_generated_arrays(kind):
    rng = np.random.default_rng(11)
    prop = random_prop(kind, 3, 3, lambda x: 1, rng)
    prop = prop.shifted(0.1 + 1e-9)  # a value with a long decimal form
    spec = parse_vnnlib(to_vnnlib(prop, 3, 3, "comment"))
    assert len(spec.regions) == len(prop.boxes)
    for region, (lo, hi) in zip(spec.regions, prop.boxes, strict=True):
        assert np.array_equal(region.lower, lo) and np.array_equal(region.upper, hi)
        cond = region.condition
        d, k = prop.rhs.shape
        assert np.array_equal(cond.coef[:d, :k], prop.coef)
        assert np.array_equal(cond.rhs[:d, :k], prop.rhs)
        assert np.all(np.isinf(cond.rhs[:d, k:])) and np.all(np.isinf(cond.rhs[d:]))


def test_independent_check_rejects_points_outside_the_boxes():
    case = _case(0)
    lo, hi = case.prop.boxes[0]
    outside = (hi + 1.0).astype(np.float32).astype(np.float64)
    assert not check_counterexample(case, outside)
    assert not check_counterexample(case, np.full(case.net.n_in, np.nan))


def test_generator_survives_a_highs_solve_error():
    """Campaign case 601:374: HiGHS ended the placement MILP in "Solve error"; the generator
    asks Gurobi then (needs gurobipy: without it the case is a generator skip)."""
    pytest.importorskip("gurobipy")
    case = make_case(601, 374)
    assert case.vnnlib and np.isfinite(case.margin)
