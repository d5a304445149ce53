"""VNN-LIB 2.0 queries: networks, typed tensors, indexing, linear arithmetic; 1.0 equivalence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verifier.errors import SpecError
from verifier.spec import load_query_info, parse_query, parse_vnnlib

ACAS_BOX = [(-0.129289109, 0.700434925), (0.11140846, 0.499999896), (-0.499999896, -0.499204121),
            (-0.5, 0.5), (-0.5, 0.5)]


def v1_prop() -> str:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(5))
    decl += "".join(f"(declare-const Y_{i} Real)\n" for i in range(5))
    box = "".join(f"(assert (<= X_{i} {hi}))\n(assert (>= X_{i} {lo}))\n"
                  for i, (lo, hi) in enumerate(ACAS_BOX))
    out = ("(assert (or (and (<= Y_3 Y_0) (<= Y_3 Y_1)) (and (<= Y_4 Y_0) (<= Y_4 Y_1))))\n"
           "(assert (<= (+ Y_2 (* 2 Y_0)) -1.5))\n")
    return decl + box + out


def v2_prop() -> str:
    head = ("(vnnlib-version <2.0>)\n(declare-network acas\n"
            "  (declare-input X float32 [1, 5] \"input\")\n"
            "  (declare-output Y float32 [1,5]))\n")
    box = "(assert (and " + " ".join(f"(<= {lo} X[0,{i}] {hi})"
                                    for i, (lo, hi) in enumerate(ACAS_BOX)) + "))\n"
    out = ("(assert (or (and (<= Y[0,3] Y[0,0]) (>= Y[0,1] Y[0,3]))\n"
           "            (and (<= (- Y[0,4] Y[0,0]) 0) (<= (+ Y[0,4] (- Y[0,1])) 0.0))))\n"
           "(assert (<= (+ Y[0,2] (* 2 Y[0,0]) 1.5) 0))\n")
    return head + box + out


def test_info_of_a_2_0_query():
    q = parse_query(v2_prop(), "acas.vnnlib")
    assert q.info.version == "2.0" and q.spec.version == "2.0"
    (net,) = q.info.networks
    assert net.name == "acas" and q.info.network("acas") is net
    assert [(t.name, t.dtype, t.shape, t.kind, t.onnx_name) for t in net.inputs] == [
        ("X", "float32", (1, 5), "input", "input")]
    assert [(t.name, t.shape, t.onnx_name) for t in net.outputs] == [("Y", (1, 5), None)]
    assert (q.spec.n_inputs, q.spec.n_outputs) == (5, 5)


def test_equivalent_to_1_0():
    a, b = parse_vnnlib(v1_prop()), parse_vnnlib(v2_prop())
    assert len(a.regions) == len(b.regions) == 1
    ra, rb = a.regions[0], b.regions[0]
    np.testing.assert_array_equal(ra.lower, rb.lower)
    np.testing.assert_array_equal(ra.upper, rb.upper)
    rng = np.random.default_rng(0)
    for y in rng.normal(size=(500, 5)):
        assert ra.condition.holds(y) == rb.condition.holds(y)


def test_row_major_indexing_of_a_3d_tensor():
    text = ("(declare-network n (declare-input X Real [2,3,4]) (declare-output Y Real []))\n"
            + "".join(f"(assert (<= X[{i},{j},{k}] {i * 12 + j * 4 + k + 0.5}))\n"
                      f"(assert (>= X[{i},{j},{k}] 0))\n"
                      for i in range(2) for j in range(3) for k in range(4))
            + "(assert (>= Y 1))\n")
    s = parse_vnnlib(text)
    np.testing.assert_array_equal(s.regions[0].upper, np.arange(24) + 0.5)
    np.testing.assert_array_equal(s.regions[0].condition.coef, [[[-1.0]]])


def test_scaled_bounds_unary_minus_and_not_equal():
    text = ("(vnnlib-version <2.0>)\n"
            "(declare-network acc (declare-input X Real [2]) (declare-output Y Real [2]))\n"
            "(assert (<= (* -1.0 X[0]) 0.0))\n(assert (<= X[0] 50.0))\n"
            "(assert (<= (- X[1]) 50))\n(assert (<= (* X[1] 0.5) 25))\n"
            "(assert (!= Y[0] Y[1]))\n")
    s = parse_vnnlib(text)
    r = s.regions[0]
    np.testing.assert_array_equal(r.lower, [0, -50])
    np.testing.assert_array_equal(r.upper, [50, 50])
    c = r.condition
    assert c.n_disjuncts == 2 and c.strict.all()
    assert c.holds([0, 1]) and c.holds([1, 0]) and not c.holds([1, 1])


@pytest.mark.parametrize("text,words", [
    ("(declare-network a (declare-input X Real [1]) (declare-output Y Real [1]))"
     "(declare-network b (declare-input U Real [1]) (declare-output V Real [1]))"
     "(assert (<= X[0] 1))(assert (>= X[0] 0))(assert (<= Y[0] 0))",
     "exactly one declared network"),
    ("(declare-network a (declare-input X Real [1]) (declare-input Z Real [1])"
     " (declare-output Y Real [1]))(assert (<= X[0] 1))",
     "exactly one input and one output tensor"),
    ("(declare-network a (declare-input X Real [1,5]) (declare-output Y Real [1]))"
     "(assert (<= X[0,5] 1))", "1:89: index X[0,5] out of range for X of shape [1,5]"),
    ("(declare-network a (declare-input X Real [1,5]) (declare-output Y Real [1]))"
     "(assert (<= X[0] 1))", "out of range"),
    ("(declare-network a (declare-input X Real [2]) (declare-hidden H Real [2] \"h\")"
     " (declare-output Y Real [1]))(assert (<= H[0] 1))", "hidden tensor H"),
    ("(declare-network a (declare-input X Real [1,x]) (declare-output Y Real [1]))",
     "malformed shape"),
    ("(declare-network a (declare-output Y Real [1]))(assert (<= Y[0] 1))",
     "at least one declare-input"),
    ("(vnnlib-version <3.0>)", "unsupported VNN-LIB version"),
    ("(declare-const X_0 Real)(declare-network a (declare-input X Real [1])"
     " (declare-output Y Real [1]))", "in a VNN-LIB 1.0 file"),
    ("(declare-network a (declare-input X Real [2]) (declare-output Y Real [1]))\n"
     "(assert (<= X 1))", "unknown variable 'X'"),
])
def test_2_0_errors(text, words):
    with pytest.raises(SpecError) as e:
        parse_vnnlib(text, "q.vnnlib")
    assert words in str(e.value), str(e.value)


def test_info_only_accepts_several_networks(tmp_path: Path):
    p = tmp_path / "two.vnnlib"
    p.write_text("(vnnlib-version <2.0>)\n"
                 "(declare-network a (declare-input X float32 [1,3]) (declare-output Y Real [2]))\n"
                 "(declare-network b (equal-to a) (declare-input U float32 [1,3])"
                 " (declare-output V Real [2]))\n(assert (<= Y[0] V[0]))\n")
    info = load_query_info(p)
    assert [n.name for n in info.networks] == ["a", "b"]
    assert info.network("b").equivalences == (("equal-to", "a"),)
    assert info.network("b").inputs[0].shape == (1, 3)


def test_against_reference_parser():
    """Our normal form against the PyPI ``vnnlib`` reference parser's (one assert per kind)."""
    vnnlib = pytest.importorskip("vnnlib")
    compat = pytest.importorskip("vnnlib.compat")
    text = ("(vnnlib-version <2.0>)\n(declare-network acas\n"
            "  (declare-input X float32 [1,5])\n  (declare-output Y float32 [1,5]))\n"
            "(assert (and " + " ".join(f"(<= X[0,{i}] {hi}) (>= X[0,{i}] {lo})"
                                      for i, (lo, hi) in enumerate(ACAS_BOX)) + "\n"
            "  (or (<= Y[0,1] Y[0,0]) (<= (+ Y[0,2] (* 2.0 Y[0,3])) (- Y[0,0] 1.5)))))\n")
    cases = compat.transform(vnnlib.parse_query_string(text))
    s = parse_vnnlib(text)
    assert len(cases) == len(s.regions) == 1
    lo, hi = np.array(cases[0].input_box).T
    np.testing.assert_array_equal(lo, s.regions[0].lower)
    np.testing.assert_array_equal(hi, s.regions[0].upper)
    ref = [(np.array(p.coeff_matrix), np.array(p.rhs)) for p in cases[0].output_constraints]
    c = s.regions[0].condition
    assert len(ref) == c.n_disjuncts
    for (a, b), coef, rhs in zip(ref, c.coef, c.rhs, strict=True):
        np.testing.assert_array_equal(a, coef)
        np.testing.assert_array_equal(b, rhs)
