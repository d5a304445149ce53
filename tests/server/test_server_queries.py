"""VNN-LIB 2.0 queries that only a composed model verifies, submitted to the service: the
uploaded model stands for the query's one network (and for networks declared equal-to it);
verdicts match the CLI's answers known by construction; a query over two different networks
or with a tensor the model lacks is refused at submit (422 naming the problem)."""

from __future__ import annotations

import pytest
from server_util import client_for, settings_for, submit, wait_final

# tiny_model_bytes: h1 = X @ [[1, -1], [1, 1]] = [x0 + x1, x1 - x0], h2 = relu(h1),
# Y = h2_0 - h2_1. On the box [-1, 1]^2, h2_0 ranges over [0, 2].
BOX = "(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] -1) (<= X[0,1] 1)))\n"
HIDDEN = ("(vnnlib-version <2.0>)\n(declare-network f (declare-input X float32 [1,2]) "
          '(declare-hidden H float32 [1,2] "h2") (declare-output Y float32 [1,1]))\n' + BOX)
TWO = ("(vnnlib-version <2.0>)\n"
       "(declare-network f (declare-input X float32 [1,2]) (declare-output Y float32 [1,1]))\n"
       "(declare-network g {rel}(declare-input U float32 [1,2]) "
       "(declare-output W float32 [1,1]))\n" + BOX
       + BOX.replace("X", "U") + "(assert (= X[0,0] U[0,0]))(assert (= X[0,1] U[0,1]))\n")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with client_for(settings_for(tmp_path_factory.mktemp("data"))) as c:
        yield c


def _final(client, spec: str) -> dict:
    r = submit(client, spec, timeout=60)
    assert r.status_code == 202, r.text
    return wait_final(client, r.json()["id"], timeout=120)


def test_hidden_bound_that_holds_is_unsat(client):
    job = _final(client, HIDDEN + "(assert (>= H[0,0] 2.5))\n")
    assert (job["status"], job["verdict"]) == ("done", "unsat"), job


def test_hidden_bound_that_fails_is_sat_with_every_declared_value(client):
    job = _final(client, HIDDEN + "(assert (>= H[0,0] 1.5))\n")
    assert (job["status"], job["verdict"]) == ("done", "sat"), job
    x, y = job["counterexample"]["x"], job["counterexample"]["y"]
    assert len(x) == 2 and len(y) == 3  # X; then H (2 values) and Y
    h0 = max(x[0] + x[1], 0.0)
    assert y[0] == pytest.approx(h0, abs=1e-6) and h0 >= 1.5
    text = client.get(f"/v1/verifications/{job['id']}/results").text.splitlines()
    assert text[0] == "sat" and text[1].startswith("((X_0 ") and text[-1].startswith(" (Y_2 ")


def test_network_equal_to_the_uploaded_one_agrees_with_it(client):
    """f and g are the same model on the same point: f - g > 1e-3 has no solution."""
    spec = TWO.format(rel="(equal-to f) ") + "(assert (>= Y[0,0] (+ W[0,0] 0.001)))\n"
    job = _final(client, spec)
    assert (job["status"], job["verdict"]) == ("done", "unsat"), job


@pytest.mark.parametrize("spec, message", [
    (TWO.format(rel="") + "(assert (>= Y[0,0] W[0,0]))\n",
     "2 networks that are not equal-to another (f, g)"),
    (HIDDEN.replace('"h2"', '"nope"') + "(assert (>= H[0,0] 1.5))\n",
     "no node of the model computes a value named"),
    (HIDDEN.replace("[1,2] \"h2\"", "[1,3] \"h2\"") + "(assert (>= H[0,0] 1.5))\n",
     "H has 3 elements"),
])
def test_queries_the_model_cannot_answer_are_refused_at_submit(client, spec, message):
    r = submit(client, spec, timeout=60)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"], r.text
