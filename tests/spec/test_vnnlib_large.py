"""Specs with many disjuncts: linear-time parsing into stacked arrays (no timing asserts)."""

from __future__ import annotations

import numpy as np
import pytest

from verifier.spec import parse_vnnlib


def output_or_spec(n: int, n_in: int = 5, n_out: int = 10) -> str:
    """One input box and one ``or`` of ``n`` two-constraint conjunctions over outputs."""
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += [f"(assert (<= X_{i} 1))\n(assert (>= X_{i} -1))" for i in range(n_in)]
    lines.append("(assert (or")
    lines += [f"  (and (<= Y_{d % n_out} {d * 0.001:.6g}) (>= Y_{(d + 1) % n_out} -{d}e-2))"
              for d in range(n)]
    lines.append("))")
    return "\n".join(lines)


def boxes_spec(n: int, n_in: int = 2) -> str:
    """nn4sys style: ``or`` of ``n`` conjunctions, each an input box plus an output bound."""
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + ["(declare-const Y_0 Real)"]
    lines.append("(assert (or")
    for d in range(n):
        box = " ".join(f"(>= X_{i} {d}) (<= X_{i} {d}.5)" for i in range(n_in))
        lines.append(f"  (and {box} (>= Y_0 {d}.25))")
    lines.append("))")
    return "\n".join(lines)


def check_output_or(n: int) -> None:
    s = parse_vnnlib(output_or_spec(n))
    (r,) = s.regions
    c = r.condition
    assert c.coef.shape == (n, 2, 10) and c.rhs.shape == (n, 2)
    d = n - 1
    np.testing.assert_array_equal(c.coef[d, 0], np.eye(10)[d % 10])
    assert c.rhs[d, 0] == float(f"{d * 0.001:.6g}") and c.rhs[d, 1] == d * 1e-2


def check_boxes(n: int) -> None:
    s = parse_vnnlib(boxes_spec(n))
    assert len(s.regions) == n
    r = s.regions[-1]
    np.testing.assert_array_equal(r.lower, [n - 1, n - 1])
    np.testing.assert_array_equal(r.upper, [n - 0.5, n - 0.5])
    assert r.condition.holds([n - 0.5]) and not r.condition.holds([n - 1])


def test_5000_disjuncts_over_outputs():
    check_output_or(5000)


def test_5000_input_boxes():
    check_boxes(5000)


@pytest.mark.slow
def test_60000_disjuncts_over_outputs():
    check_output_or(60_000)


@pytest.mark.slow
def test_60000_input_boxes():
    check_boxes(60_000)
