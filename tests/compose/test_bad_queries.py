"""Queries that cannot be bound to their models are refused with a SpecError naming the
problem (the CLI turns it into exit 2 and one stderr line); the messages are docs/vnnlib.md's."""

from __future__ import annotations

import pytest

from tests.compose.nets import relu_net, two_io_net
from verifier.compose.run import verify_query
from verifier.config import VerifyConfig
from verifier.errors import SpecError
from verifier.spec import parse_query

BOX = ("(assert (and (>= A[0,0] 0) (<= A[0,0] 1) (>= A[0,1] 0) (<= A[0,1] 1)"
       " (>= B[0,0] 0) (<= B[0,0] 1)))(assert (>= S[0,0] 5))")


def _refused(decl: str, model, message: str) -> None:
    query = parse_query("(vnnlib-version <2.0>)" + decl + BOX, compose=True)
    with pytest.raises(SpecError, match=message):
        verify_query(query, {"n": model}, VerifyConfig(timeout=5))


@pytest.mark.parametrize("decl, message", [
    ("(declare-network n (declare-input A float32 [1,2] \"a\") (declare-input B float32 [1,1])"
     " (declare-output S float32 [1,1]) (declare-output D float32 [1,2]))",
     "either every declared input names its ONNX tensor or none does"),
    ("(declare-network n (declare-input A float32 [1,2]) (declare-input B float32 [1,1])"
     " (declare-output S float32 [1,1]))", r"declares 1 output\(s\), the model has 2"),
    ("(declare-network n (declare-input A float32 [1,2] \"a\") (declare-input B float32 [1,1]"
     " \"a\") (declare-output S float32 [1,1]) (declare-output D float32 [1,2]))",
     "ONNX input 'b' is not declared"),
    ("(declare-network n (declare-input A float64 [1,2]) (declare-input B float32 [1,1])"
     " (declare-output S float32 [1,1]) (declare-output D float32 [1,2]))",
     "A has element type float64; supported: float32, real"),
    ("(declare-network n (declare-input A float32 [1,2]) (declare-input B float32 [1,1])"
     " (declare-output S float32 [1,1] \"s\") (declare-output D float32 [1,2] \"zz\"))",
     "ONNX output 'zz' is not a graph output"),
    ("(declare-network n (declare-input A float32 [1,2]) (declare-input B float32 [1,1])"
     " (declare-output S float32 [1,2]) (declare-output D float32 [1,2]))",
     "output S has 2 elements, the model's value 's' 1"),
])
def test_binding_errors(decl, message):
    _refused(decl, two_io_net(), message)


def test_input_size_mismatch():
    query = parse_query("(vnnlib-version <2.0>)(declare-network n (declare-input A float32 [1,3])"
                        " (declare-input B float32 [1,1]) (declare-output S float32 [1,1])"
                        " (declare-output D float32 [1,2]))" + BOX.replace(
                            "(>= B[0,0] 0)", "(>= A[0,2] 0) (<= A[0,2] 1) (>= B[0,0] 0)"),
                        compose=True)
    with pytest.raises(SpecError, match="input A has 3 elements, the ONNX input 'a' 2"):
        verify_query(query, {"n": two_io_net()}, VerifyConfig(timeout=5))


def test_two_networks_with_different_input_sizes_still_compose():
    """Networks need not share input shapes: each reads its own slice of the free inputs."""
    wide = relu_net([[1, 0, 0]], [0], [[1]], [0])
    narrow = relu_net([[1, 0]], [0], [[1]], [0])
    text = ("(vnnlib-version <2.0>)"
            "(declare-network f (declare-input X float32 [1,3]) (declare-output Y float32 [1,1]))"
            "(declare-network g (declare-input U float32 [1,2]) (declare-output W float32 [1,1]))"
            "(assert (and (>= X[0,0] 0) (<= X[0,0] 1) (>= X[0,1] 0) (<= X[0,1] 1)"
            " (>= X[0,2] 0) (<= X[0,2] 1) (>= U[0,1] 0) (<= U[0,1] 1)))"
            "(assert (= X[0,0] U[0,0]))(assert (>= (- Y[0,0] W[0,0]) 0.01))")
    query = parse_query(text, compose=True)
    found = verify_query(query, {"f": wide, "g": narrow}, VerifyConfig(timeout=10))
    assert found.result.verdict == "unsat"  # both are relu(x0) on the shared x0
