"""One test per VNN-LIB 2.0 theory beyond NH/SIO/SNET/SNC/OUTC, with answers known by
construction, both sat and unsat: hidden nodes (H), several inputs and outputs (MIO), several
networks sharing inputs (MNET), comparisons across nodes (MNC), linear constraints over inputs
(LIN) and polynomial terms (POLY). Every ``sat`` carries an assignment re-checked on the
original networks, and the test recomputes it with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compose.nets import affine_net, relu_net, two_io_net
from verifier.compose.run import verify_query
from verifier.config import VerifyConfig
from verifier.spec import parse_query

HEAD = "(vnnlib-version <2.0>)\n"
BOX2 = "(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] -1) (<= X[0,1] 1)))\n"
F = relu_net([[1, -1], [1, 1]], [0, 0], [[1, 1]], [0])  # h = relu(x0-x1, x0+x1), y = h0+h1
F_DECL = ("(declare-network f (declare-input X float32 [1,2]) "
          "(declare-hidden H float32 [1,2] \"h\") (declare-output Y float32 [1,1]))\n")
IDENT = affine_net([[1, 0], [0, 1]], [0, 0])  # y = x
DIFF = affine_net([[1, -1]], [0])  # y = x0 - x1
NET_XY = "(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,{m}]))\n"


def run(text: str, models: dict, method: str = "auto", timeout: float = 20.0):
    query = parse_query(HEAD + text, "q.vnnlib", compose=True)
    found = verify_query(query, models, VerifyConfig(timeout=timeout, method=method))
    if found.result.verdict == "sat":
        assert found.assignment is not None
    return found


def tensors(found) -> dict[str, np.ndarray]:
    return {name: v.reshape(shape) for name, _, _, shape, v in found.assignment.tensors}


def forward_f(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float32).reshape(2)
    h = np.maximum(np.array([x[0] - x[1], x[0] + x[1]], np.float32), 0)
    return h, np.array([h.sum()], np.float32)


@pytest.mark.parametrize("method", ["auto", "milp"])
@pytest.mark.parametrize("bound, verdict", [(1.5, "sat"), (2.5, "unsat")])
def test_hidden_node(bound, verdict, method):
    """max h0 = max relu(x0 - x1) = 2 on the box."""
    found = run(F_DECL + BOX2 + f"(assert (>= H[0,0] {bound}))", {"f": F}, method)
    assert found.result.verdict == verdict
    if verdict == "sat":
        t = tensors(found)
        h, y = forward_f(t["X"])
        assert list(t) == ["X", "H", "Y"]
        np.testing.assert_array_equal(t["H"].reshape(-1), h)
        np.testing.assert_array_equal(t["Y"].reshape(-1), y)
        assert t["H"][0, 0] >= bound


def test_hidden_and_output_in_one_constraint():
    """y - h0 = h1 = relu(x0 + x1) <= 2: y - h0 >= 2.5 is unsat, >= 1.5 sat."""
    for bound, verdict in ((2.5, "unsat"), (1.5, "sat")):
        found = run(F_DECL + BOX2 + f"(assert (>= (- Y[0,0] H[0,0]) {bound}))", {"f": F})
        assert found.result.verdict == verdict


MIO_DECL = ("(declare-network n (declare-input A float32 [1,2]) (declare-input B float32 [1,1])"
            " (declare-output S float32 [1,1]) (declare-output D float32 [1,2]))\n")
MIO_NAMED = ("(declare-network n (declare-input B float32 [1,1] \"b\")"
             " (declare-input A float32 [1,2] \"a\") (declare-output D float32 [1,2] \"d\")"
             " (declare-output S float32 [1,1] \"s\"))\n")
MIO_BOX = ("(assert (and (>= A[0,0] 0) (<= A[0,0] 1) (>= A[0,1] 0) (<= A[0,1] 1)"
           " (>= B[0,0] 0) (<= B[0,0] 1)))\n")


@pytest.mark.parametrize("decl", [MIO_DECL, MIO_NAMED], ids=["by-order", "by-name"])
@pytest.mark.parametrize("prop, verdict", [
    ("(>= S[0,0] 2.9)", "sat"), ("(>= S[0,0] 3.1)", "unsat"),  # s = a0 + a1 + b <= 3
    ("(>= (+ D[0,0] D[0,1]) 1.9)", "sat"),  # d = relu(a - b): d0 + d1 <= 2
    ("(>= (+ D[0,0] D[0,1]) 2.1)", "unsat"),
    ("(and (>= S[0,0] 2.5) (>= D[0,0] 0.9))", "unsat"),  # d0 >= .9 forces b <= .1, s <= 2.1
])
def test_several_inputs_and_outputs(decl, prop, verdict):
    found = run(decl + MIO_BOX + f"(assert {prop})", {"n": two_io_net()})
    assert found.result.verdict == verdict
    if verdict == "sat":
        t = tensors(found)
        a, b = t["A"].reshape(2).astype(np.float32), np.float32(t["B"].reshape(()))
        assert t["S"].reshape(()) == np.float32(a.sum() + b) or \
            abs(t["S"].reshape(()) - (a.sum() + b)) < 1e-6
        np.testing.assert_array_equal(t["D"].reshape(2), np.maximum(a - b, 0))
        order = list(t)
        assert order == (["A", "B", "S", "D"] if decl is MIO_DECL else ["B", "A", "D", "S"])


SNET = ("(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,1]))\n"
        "(declare-network g (declare-input U float32 [1,2]) (declare-output W float32 [1,1]))\n"
        + BOX2 + "(assert (and (= X[0,0] U[0,0]) (= U[0,1] X[0,1])))\n")
G = relu_net([[1, -1], [1, 1]], [0, 0], [[1, 1.01]], [0])  # g - f = 0.01 relu(x0 + x1) <= .02


@pytest.mark.parametrize("method", ["auto", "milp"])
@pytest.mark.parametrize("d, verdict", [(0.03, "unsat"), (0.01, "sat")])
def test_two_networks_on_shared_inputs(d, verdict, method):
    prop = f"(assert (or (>= (- Y[0,0] W[0,0]) {d}) (<= (- Y[0,0] W[0,0]) -{d})))"
    found = run(SNET + prop, {"f": F, "g": G}, method)
    assert found.result.verdict == verdict
    if verdict == "sat":
        t = tensors(found)
        np.testing.assert_array_equal(t["X"], t["U"])
        assert list(t) == ["X", "Y", "U", "W"]
        assert abs(t["Y"] - t["W"]).item() >= d


def test_networks_without_shared_inputs_are_independent():
    """Without the equalities, X and U are free: |f(X) - g(U)| reaches 2.02."""
    text = SNET.split("(assert (and (= ")[0] + BOX2.replace("X[", "U[")
    found = run(text + "(assert (>= (- W[0,0] Y[0,0]) 2.0))", {"f": F, "g": G})
    assert found.result.verdict == "sat"
    t = tensors(found)
    assert not np.array_equal(t["X"], t["U"])


@pytest.mark.parametrize("bound, verdict", [(0.9, "sat"), (1.1, "unsat")])
def test_comparison_across_input_and_output(bound, verdict):
    """y - x0 = -x1 <= 1 for y = x0 - x1 (MNC)."""
    found = run(NET_XY.format(m=1) + BOX2 + f"(assert (>= (- Y[0,0] X[0,0]) {bound}))",
                {"f": DIFF})
    assert found.result.verdict == verdict


@pytest.mark.parametrize("bound, verdict", [(0.45, "sat"), (0.7, "unsat")])
def test_linear_constraint_over_inputs(bound, verdict):
    """max x0 - x1 subject to x0 + x1 >= 1.5 on [-1, 1]^2 is 0.5 (at x0 = 1, x1 = .5)."""
    found = run(NET_XY.format(m=1) + BOX2 +
                f"(assert (>= (+ X[0,0] X[0,1]) 1.5))(assert (>= Y[0,0] {bound}))",
                {"f": DIFF})
    assert found.result.verdict == verdict
    if verdict == "sat":
        x = tensors(found)["X"].reshape(2)
        assert x.sum() >= 1.5 and x[0] - x[1] >= bound


@pytest.mark.parametrize("prop, verdict", [
    ("(>= (* Y[0,0] Y[0,1]) 0.9)", "sat"), ("(>= (* Y[0,0] Y[0,1]) 1.1)", "unsat"),
    ("(<= (* Y[0,0] Y[0,0]) -0.1)", "unsat"), ("(>= (* Y[0,0] Y[0,0]) 0.81)", "sat"),
    ("(>= (* Y[0,0] Y[0,1] X[0,0]) 0.9)", "sat"), ("(>= (* 2 Y[0,0] Y[0,1] X[0,0]) 2.2)", "unsat"),
    ("(>= (* (+ Y[0,0] 1) (- Y[0,1] 1)) 0.1)", "unsat"),  # (y0 + 1)(y1 - 1) <= 0 on the box
    ("(<= (* (+ Y[0,0] 1) (- Y[0,1] 1)) -3.9)", "sat"),  # reaches -4 at y = (1, -1)
    ("(>= (* (- Y[0,0] Y[0,1]) (- Y[0,0] Y[0,1])) 4.1)", "unsat"),  # (y0 - y1)^2 <= 4
    ("(>= (* (- Y[0,0] Y[0,1]) (- Y[0,0] Y[0,1])) 3.9)", "sat"),
    ("(<= (- (* Y[0,0] Y[0,0]) Y[0,0]) -0.3)", "unsat"),  # y^2 - y >= -1/4
    ("(<= (- (* Y[0,0] Y[0,0]) Y[0,0]) -0.2)", "sat"),
    ("(>= (* Y[0,0] Y[0,0] Y[0,0]) 1.1)", "unsat"), ("(<= (* Y[0,0] Y[0,0] Y[0,0]) -0.9)", "sat"),
    ("(>= (* X[0,0] X[0,1]) 1.1)", "unsat"), ("(<= (* X[0,0] X[0,1]) -0.9)", "sat"),
])
def test_polynomial_terms(prop, verdict):
    found = run(NET_XY.format(m=2) + BOX2 + f"(assert {prop})", {"f": IDENT})
    assert found.result.verdict == verdict


@pytest.mark.parametrize("bound, verdict", [(0.1, "unsat"), (0.0, "sat")])
def test_equated_inputs_are_one_variable(bound, verdict):
    """With x0 = x1, y = x0 - x1 is 0 everywhere: y >= 0.1 is unsat, y >= 0 sat."""
    found = run(NET_XY.format(m=1) + BOX2 + "(assert (= X[0,0] X[0,1]))" +
                f"(assert (>= Y[0,0] {bound}))", {"f": DIFF})
    assert found.result.verdict == verdict
    if verdict == "sat":
        x = tensors(found)["X"].reshape(2)
        assert x[0] == x[1]


def test_equality_inside_a_disjunction_is_not_unified():
    """(x0 = x1 and y >= .5) or y >= 5: unsat, but the equality holds only in one disjunct,
    so it stays two rows; the answer may be unknown, never sat."""
    found = run(NET_XY.format(m=1) + BOX2 +
                "(assert (or (and (= X[0,0] X[0,1]) (>= Y[0,0] 0.5)) (>= Y[0,0] 5)))",
                {"f": DIFF}, timeout=5)
    assert found.result.verdict in ("unsat", "unknown", "timeout")


def test_equated_inputs_with_disjoint_boxes_make_an_empty_region():
    found = run(NET_XY.format(m=1) + "(assert (and (>= X[0,0] 0) (<= X[0,0] 1)))"
                "(assert (and (>= X[0,1] 2) (<= X[0,1] 3)))(assert (= X[0,0] X[0,1]))"
                "(assert (>= Y[0,0] -100))", {"f": DIFF})
    assert found.result.verdict == "unsat"


@pytest.mark.parametrize("g_bias, verdict", [(0.1, "unsat"), (-1.0, "sat")])
def test_argmax_agreement_of_two_networks(g_bias, verdict):
    """f = (x0 + .5, 0), g = (2 x0 + g_bias, 0) on x in [0, 1]^2: with g_bias = .1 both pick
    class 0 everywhere; with -1, g picks class 1 for x0 < .5 while f picks class 0."""
    f = affine_net([[1, 0], [0, 0]], [0.5, 0])
    g = affine_net([[2, 0], [0, 0]], [g_bias, 0])
    text = ("(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,2]))"
            "(declare-network g (declare-input U float32 [1,2]) (declare-output W float32 [1,2]))"
            "(assert (and (>= X[0,0] 0) (<= X[0,0] 1) (>= X[0,1] 0) (<= X[0,1] 1)))"
            "(assert (and (= X[0,0] U[0,0]) (= X[0,1] U[0,1])))"
            "(assert (or (and (>= Y[0,0] Y[0,1]) (> W[0,1] W[0,0]))"
            "            (and (> Y[0,1] Y[0,0]) (>= W[0,0] W[0,1]))))")
    found = run(text, {"f": f, "g": g})
    assert found.result.verdict == verdict
    if verdict == "sat":
        t = tensors(found)
        assert t["Y"][0, 0] >= t["Y"][0, 1] and t["W"][0, 1] > t["W"][0, 0]
