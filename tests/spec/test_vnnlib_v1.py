"""VNN-LIB 1.0 features, each on a small hand-written spec with exact expected arrays."""

from __future__ import annotations

import numpy as np
import pytest

from verifier.spec import parse_vnnlib

DECL = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "".join(
    f"(declare-const Y_{j} Real)\n" for j in range(3))
BOX = "(assert (<= X_0 1))\n(assert (>= X_0 -1))\n(assert (<= X_1 2.5))\n(assert (>= X_1 0))\n"


def spec(body: str, box: str = BOX):
    return parse_vnnlib(DECL + box + body, "t.vnnlib")


def only_region(s):
    assert len(s.regions) == 1
    return s.regions[0]


def test_box_and_single_constraint():
    s = spec("(assert (<= Y_0 Y_1))")
    assert (s.n_inputs, s.n_outputs, s.version) == (2, 3, "1.0")
    r = only_region(s)
    np.testing.assert_array_equal(r.lower, [-1, 0])
    np.testing.assert_array_equal(r.upper, [1, 2.5])
    assert r.lower.dtype == np.float64
    np.testing.assert_array_equal(r.condition.coef, [[[1, -1, 0]]])
    np.testing.assert_array_equal(r.condition.rhs, [[0]])
    assert r.condition.strict is None
    assert r.condition.holds([1, 2, 0]) and r.condition.holds([2, 2, 0])
    assert not r.condition.holds([3, 2, 0])


def test_several_asserts_are_a_conjunction():
    s = spec("(assert (>= Y_1 Y_0))\n(assert (<= Y_2 3))")
    c = only_region(s).condition
    assert c.n_disjuncts == 1 and c.coef.shape == (1, 2, 3)
    assert c.holds([0, 1, 3]) and not c.holds([0, 1, 3.5]) and not c.holds([2, 1, 0])


def test_or_of_ands_with_padding():
    s = spec("(assert (or (and (<= Y_0 0) (<= Y_1 0)) (and (>= Y_2 5))))")
    c = only_region(s).condition
    assert c.coef.shape == (2, 2, 3)
    np.testing.assert_array_equal(c.coef[1, 1], [0, 0, 0])  # padding row
    assert c.rhs[1, 1] == np.inf
    assert c.holds([-1, -1, 0]) and c.holds([1, 1, 6]) and not c.holds([1, -1, 4])


def test_nested_and_or_in_any_order():
    s = spec("(assert (and (or (<= Y_0 0) (<= Y_1 0)) (or (and (<= Y_2 1)) (>= Y_2 4))))")
    c = only_region(s).condition
    assert c.n_disjuncts == 4
    for y, expect in [([-1, 5, 0], True), ([5, -1, 5], True), ([5, -1, 2], False),
                      ([5, 5, 0], False)]:
        assert c.holds(y) is expect


@pytest.mark.parametrize("text,value", [
    ("3", 3.0), ("-1.5", -1.5), ("(- 1.5)", -1.5), ("1e-3", 1e-3), ("-2.5E+2", -250.0),
    (".5", 0.5), ("7.", 7.0), ("(- (- 2))", 2.0),
])
def test_constants(text, value):
    s = spec(f"(assert (<= Y_0 {text}))")
    assert only_region(s).condition.rhs[0, 0] == value


def test_constant_on_the_left_and_x_bounds_either_way():
    box = "(assert (>= 1 X_0))\n(assert (<= -1 X_0))\n(assert (< X_1 2.5))\n(assert (> X_1 0))\n"
    r = only_region(spec("(assert (<= 0.5 Y_0))", box))
    np.testing.assert_array_equal(r.lower, [-1, 0])
    np.testing.assert_array_equal(r.upper, [1, 2.5])  # strict input bounds: closed box
    np.testing.assert_array_equal(r.condition.coef, [[[-1, 0, 0]]])
    np.testing.assert_array_equal(r.condition.rhs, [[-0.5]])


def test_equality_on_inputs_and_outputs():
    box = "(assert (= X_0 0.25))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"
    r = only_region(spec("(assert (= Y_0 Y_1))", box))
    assert r.lower[0] == r.upper[0] == 0.25
    c = r.condition
    assert c.coef.shape == (1, 2, 3)
    assert c.holds([1, 1, 0]) and not c.holds([1, 1.5, 0])


def test_strict_output_comparison_is_exact_in_holds():
    c = only_region(spec("(assert (< Y_0 Y_1))")).condition
    np.testing.assert_array_equal(c.rhs, [[0]])
    assert c.strict is not None and c.strict.tolist() == [[True]]
    assert c.holds([0, 1, 0]) and not c.holds([1, 1, 0])
    c = only_region(spec("(assert (> Y_2 1))")).condition
    assert c.holds([0, 0, 1.5]) and not c.holds([0, 0, 1])


def test_comments_and_declare_fun():
    text = ("; header\n(declare-fun X_0 () Real) ; trailing\n(declare-const Y_0 Real)\n"
            "(assert (<= X_0 1)) ; c\n(assert (>= X_0 0))\n; (assert (<= Y_0 100))\n"
            "(assert (>= Y_0 3))\n")
    s = parse_vnnlib(text)
    c = only_region(s).condition
    np.testing.assert_array_equal(c.coef, [[[-1]]])
    np.testing.assert_array_equal(c.rhs, [[-3]])


def test_several_input_boxes_prop6_shape():
    x_or = ("(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0))"
            " (and (<= X_0 0) (>= X_0 -1) (<= X_1 2) (>= X_1 1))))\n")
    s = spec(x_or + "(assert (or (and (<= Y_1 Y_0)) (and (<= Y_2 Y_0))))", box="")
    assert len(s.regions) == 2
    np.testing.assert_array_equal(s.regions[0].lower, [0, 0])
    np.testing.assert_array_equal(s.regions[1].upper, [0, 2])
    for r in s.regions:
        assert r.condition.n_disjuncts == 2
    assert s.violated_by([-0.5, 1.5], [0, -1, 5]) and not s.violated_by([-0.5, 0.5], [0, -1, 5])


def test_disjuncts_mixing_input_boxes_and_output_constraints():
    # nn4sys style: (or (and X-bounds Y-constraint) ...); equal boxes are merged
    d1 = "(and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 5))"
    d2 = "(and (>= X_0 1) (<= X_0 2) (>= X_1 0) (<= X_1 1) (<= Y_0 -5))"
    d3 = "(and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_1 -7))"
    s = spec(f"(assert (or {d1} {d2} {d3}))", box="")
    assert len(s.regions) == 2
    r0 = s.regions[0]
    assert r0.condition.n_disjuncts == 2
    assert r0.condition.holds([6, 0, 0]) and r0.condition.holds([0, -8, 0])
    assert s.regions[1].condition.holds([-6, 0, 0]) and not s.regions[1].condition.holds([6, 0, 0])


def test_output_constraints_at_top_level_apply_to_every_disjunct():
    s = spec("(assert (or (<= Y_0 0) (<= Y_1 0)))\n(assert (<= Y_2 1))")
    c = only_region(s).condition
    assert c.coef.shape == (2, 2, 3)
    assert c.holds([-1, 5, 0]) and not c.holds([-1, 5, 2])


def test_linear_output_combinations_and_scaling_of_input_bounds():
    box = "(assert (<= (* 2 X_0) 1))\n(assert (<= (* -3 X_0) 3))\n(assert (<= X_1 1))"
    box += "\n(assert (>= X_1 0))\n"
    r = only_region(spec("(assert (<= (+ Y_0 (* 2 Y_1) (- Y_2)) 1))", box))
    assert r.upper[0] == 0.5 and r.lower[0] == -1  # -3 X_0 <= 3 is X_0 >= -1, exactly
    np.testing.assert_array_equal(r.condition.coef, [[[1, 2, -1]]])


def test_scaled_input_bound_rounds_outward():
    box = "(assert (<= (* 3 X_0) 1))\n(assert (>= (* 3 X_0) -1))\n(assert (<= X_1 1))"
    box += "\n(assert (>= X_1 0))\n"
    r = only_region(spec("(assert (<= Y_0 0))", box))
    assert r.upper[0] >= 1 / 3 and r.upper[0] == np.nextafter(1 / 3, 1)
    assert r.lower[0] <= -1 / 3


def test_empty_box_is_dropped_and_no_region_means_unsat():
    x_or = ("(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0))"
            " (and (<= X_0 0) (>= X_0 1) (<= X_1 2) (>= X_1 1))))\n")
    s = spec(x_or + "(assert (<= Y_0 0))", box="")
    assert len(s.regions) == 1
    s = spec("(assert (<= Y_0 0))", box=BOX + "(assert (>= X_0 3))\n")
    assert s.regions == () and (s.n_inputs, s.n_outputs) == (2, 3)
    assert not s.violated_by([0, 0], [-1, 0, 0])


def test_constant_comparisons():
    assert spec("(assert (<= 1 0))\n(assert (<= Y_0 0))").regions == ()
    c = only_region(spec("(assert (or (<= 0 1) (<= Y_0 0)))")).condition
    assert c.holds([5, 5, 5])  # (<= 0 1) is true: the whole box is unsafe


def test_only_input_constraints_means_every_output_is_unsafe():
    c = only_region(spec("(assert (<= X_0 0.5))")).condition
    assert c.n_disjuncts == 1 and c.holds([1e9, -1e9, 0])
