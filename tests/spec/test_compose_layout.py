"""Compose mode of the parser (``parse_query(..., compose=True)``): the flat layout of hidden
tensors, several tensors and networks, passthroughs, monomials and equated inputs, and the
refusals that remain."""

from __future__ import annotations

import numpy as np
import pytest

from verifier.errors import SpecError
from verifier.spec import parse_query

HEAD = """(vnnlib-version <2.0>)
(declare-network f (declare-input X float32 [1,2]) (declare-hidden H float32 [1,3] "h")
  (declare-output Y float32 [1,2]))
(declare-network g (declare-input U float32 [1,2]) (declare-output W float32 [1,2]))
(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] 0) (<= X[0,1] 2)))
(assert (and (>= U[0,0] -3) (<= U[0,0] 3) (>= U[0,1] -3) (<= U[0,1] 3)))
"""


def q(text: str):
    return parse_query(HEAD + text, "q.vnnlib", compose=True)


def test_values_are_hidden_and_outputs_in_declaration_order():
    query = q("(assert (>= (+ H[0,2] (* 2 W[0,1])) 1))")
    layout, spec = query.layout, query.spec
    assert layout.trivial and layout.n_values == 3 + 2 + 2 and spec.n_outputs == 7
    assert spec.n_inputs == 4
    coef = spec.regions[0].condition.coef[0, 0]
    np.testing.assert_array_equal(coef, [0, 0, -1, 0, 0, 0, -2])  # >= is stored as <=


def test_equated_inputs_share_a_free_variable_and_intersect_boxes():
    query = q("(assert (= X[0,0] U[0,0]))(assert (== U[0,1] X[0,1]))(assert (>= Y[0,0] 1))")
    layout, region = query.layout, query.spec.regions[0]
    np.testing.assert_array_equal(layout.input_index, [0, 1, 0, 1])
    assert layout.n_z == 2 and not layout.passthrough
    np.testing.assert_array_equal(region.lower, [-1, 0])
    np.testing.assert_array_equal(region.upper, [1, 2])
    assert region.condition.coef.shape == (1, 1, 7)  # the equalities left no rows


def test_scaled_equality_unifies_but_one_direction_does_not():
    assert q("(assert (= (* 2 X[0,0]) (* 2 U[0,0])))(assert (>= Y[0,0] 1))").layout.n_z == 3
    one_way = q("(assert (<= X[0,0] U[0,0]))(assert (>= Y[0,0] 1))")
    assert one_way.layout.n_z == 4 and one_way.layout.passthrough == (0, 2)
    rows = one_way.spec.regions[0].condition.coef[0]
    assert any(np.array_equal(r[7:], [1, -1]) for r in rows)  # x0 - u0 <= 0 over passthroughs


def test_equality_inside_a_disjunction_stays_rows():
    query = q("(assert (or (= X[0,0] U[0,0]) (>= Y[0,0] 5)))")
    assert query.layout.n_z == 4 and len(query.layout.passthrough) == 2


def test_monomials_over_outputs_inputs_and_merged_powers():
    query = q("(assert (= X[0,0] U[0,0]))"
              "(assert (<= (* Y[0,1] H[0,2] X[0,0] U[0,0]) (+ X[0,1] 1)))")
    layout = query.layout
    # base positions: values 0..6, z0 -> 7; X[0,0] and U[0,0] are one variable: power 2
    assert layout.monomials == (((2, 1), (4, 1), (7, 2)),)
    assert layout.passthrough == (1,)  # X[0,1] is z entry 1
    coef = query.spec.regions[0].condition.coef[0, 0]
    assert coef[7] == -1 and coef[8] == 1  # -x01 + monomial <= 1
    y = layout.outputs(np.arange(1.0, 8.0), np.array([0.5, 2.0, -1.5, 3.0]))
    assert y[-1] == 3.0 * 5.0 * 0.5 ** 2 and y[7] == 2.0


def test_product_of_sums_multiplies_out():
    query = q("(assert (>= (* (+ Y[0,0] 1) (- Y[0,1] 2)) 0))")
    monos = query.layout.monomials
    assert monos == (((3, 1), (4, 1)),)
    coef = query.spec.regions[0].condition.coef[0, 0]
    rhs = query.spec.regions[0].condition.rhs[0, 0]
    # -(y0 y1 - 2 y0 + y1 - 2) <= 0
    assert (coef[3], coef[4], coef[7], rhs) == (2, -1, -1, -2)


def test_degree_above_the_limit_is_refused():
    with pytest.raises(SpecError, match="degree 9"):
        q("(assert (>= (* " + " ".join(["Y[0,0]"] * 9) + ") 1))")


def test_mixed_input_output_constraint_uses_passthroughs():
    query = q("(assert (<= (+ X[0,1] Y[0,0]) 0.5))")
    assert query.layout.passthrough == (1,)
    np.testing.assert_array_equal(query.spec.regions[0].condition.coef[0, 0][[3, 7]], [1, 1])


def test_default_mode_still_refuses_what_needs_composition():
    text = HEAD + "(assert (>= H[0,0] 1))"
    with pytest.raises(SpecError):
        parse_query(text)
    with pytest.raises(SpecError, match="exactly one declared network"):
        parse_query(HEAD + "(assert (>= Y[0,0] 1))")


def test_v1_constraint_over_two_inputs():
    text = ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)"
            "(assert (>= X_0 0))(assert (<= X_0 1))(assert (>= X_1 0))(assert (<= X_1 1))"
            "(assert (>= (+ X_0 X_1) 1.5))")
    query = parse_query(text, compose=True)
    assert query.layout.passthrough == (0, 1) and query.spec.n_outputs == 3
    with pytest.raises(SpecError, match="several inputs"):
        parse_query(text)
