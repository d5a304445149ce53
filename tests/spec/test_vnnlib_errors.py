"""Malformed, unsupported and hostile specs: always SpecError with a clear message."""

from __future__ import annotations

import gzip

import pytest

from verifier.errors import SpecError
from verifier.spec import load_query_info, load_spec, parse_vnnlib

HEAD = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
OK = HEAD + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 0))\n"


def err(text: str, source: str = "spec.vnnlib") -> str:
    with pytest.raises(SpecError) as e:
        parse_vnnlib(text, source)
    return str(e.value)


def test_syntax_error_names_line_column_and_token():
    text = HEAD + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (or (<= Y_0 0) and))\n"
    assert err(text) == ("spec.vnnlib:5:24: expected a formula '(' but found 'and'")


def test_expected_close_paren():
    text = HEAD + "(assert (<= X_0 1) (>= X_0 0))\n"
    msg = err(text)
    assert msg.startswith("spec.vnnlib:3:20: expected ')' but found '('"), msg


@pytest.mark.parametrize("text,where,words", [
    (HEAD + "(assert (<= X_0 1)\n", "spec.vnnlib:4:1", "never closed"),
    (HEAD + "(assert (<= X_0 1)))\n", "spec.vnnlib:3:20", "expected '('"),
    (HEAD + "(assert (<= X_7 1))\n", "spec.vnnlib:3:13", "unknown variable 'X_7'"),
    (HEAD + "(assert (<= X_0 abc))\n", "spec.vnnlib:3:17", "unknown variable 'abc'"),
    (HEAD + "(assert (<= X_0 1.2.3))\n", "spec.vnnlib:3:17", "expected a number or variable"),
    (HEAD + "(assert (<= X_0 1e999))\n", "spec.vnnlib:3:17", "out of float64 range"),
    (HEAD + "(assert (<= X_0 nan))\n", "spec.vnnlib:3:17", "unknown variable 'nan'"),
    (HEAD + "(assert (<= X_0))\n", "spec.vnnlib:3:10", "needs two arguments"),
    (HEAD + "(assert (not (<= X_0 1)))\n", "spec.vnnlib:3:10", "found 'not'"),
    (HEAD + "(assert (<= (/ X_0 2) 1))\n", "spec.vnnlib:3:14", "unsupported arithmetic"),
    (HEAD + "(assert (<= (* X_0 X_0) 1))\n", "spec.vnnlib:3:13", "nonlinear"),
    (HEAD + "(assert (<= X_0 Y_0))\n", "spec.vnnlib:3:9", "mixes inputs and outputs"),
    (HEAD + "(declare-const X_1 Real)\n(assert (<= (+ X_0 X_1) 1))\n", "spec.vnnlib:4:9",
     "several inputs (X_0, X_1)"),
    (HEAD + "(declare-const Z Real)\n", "spec.vnnlib:3:16", "unsupported variable name 'Z'"),
    (HEAD + "(declare-const X_0 Real)\n", "spec.vnnlib:3:16", "declared twice"),
    (HEAD + "(declare-const X_1 Int)\n", "spec.vnnlib:3:20", "unsupported sort 'Int'"),
    (HEAD + "(frobnicate)\n", "spec.vnnlib:3:2", "unknown command 'frobnicate'"),
    (HEAD + "assert\n", "spec.vnnlib:3:1", "expected '(' but found 'assert'"),
])
def test_errors_with_position(text, where, words):
    msg = err(text)
    assert msg.startswith(where + ": "), msg
    assert words in msg, msg


@pytest.mark.parametrize("text,words", [
    ("", "empty spec"),
    ("; only a comment\n\n", "empty spec"),
    (HEAD, "no assert"),
    (HEAD + "(assert (<= X_0 1))\n(assert (<= Y_0 0))\n", "unbounded input X_0: no finite lower"),
    ("(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(assert (<= Y_0 1))\n",
     "X_0 is not declared"),
])
def test_errors_without_position(text, words):
    assert words in err(text)


def test_deep_nesting_is_refused_not_a_crash():
    deep = "(or " * 5000 + "(<= Y_0 0)" + ")" * 5000
    assert "nested" in err(OK + f"(assert {deep})\n")


def test_dnf_blowup_is_capped():
    ors = "".join(f"(assert (or (<= Y_0 {i}) (>= Y_0 {i + 0.5})))\n" for i in range(30))
    with pytest.raises(SpecError, match="more than 1000 disjuncts"):
        parse_vnnlib(OK + ors, max_terms=1000)
    nested = "(and " + " ".join(f"(or (<= Y_0 {i}) (>= Y_0 {i}.5))" for i in range(30)) + ")"
    with pytest.raises(SpecError, match="more than 1000 disjuncts"):
        parse_vnnlib(OK + f"(assert (or (<= Y_0 -9) {nested}))", max_terms=1000)


def test_gzip_and_plain_files(tmp_path):
    plain = tmp_path / "p.vnnlib"
    plain.write_text(OK)
    gz = tmp_path / "p.vnnlib.gz"
    gz.write_bytes(gzip.compress(OK.encode()))
    disguised = tmp_path / "gz_without_suffix.vnnlib"
    disguised.write_bytes(gzip.compress(OK.encode()))
    specs = [load_spec(p) for p in (plain, gz, disguised)]
    for s in specs:
        assert (s.n_inputs, s.n_outputs, len(s.regions)) == (1, 1, 1)
    assert specs[1].source == str(gz)


def test_gzip_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.vnnlib.gz"
    bomb.write_bytes(gzip.compress(b" " * (20 << 20), compresslevel=9))  # 20 MiB of spaces
    assert bomb.stat().st_size < 100_000
    with pytest.raises(SpecError, match="gzip bomb"):
        load_spec(bomb, max_bytes=1 << 20)


def test_multi_member_gzip(tmp_path):
    p = tmp_path / "m.vnnlib.gz"
    half = len(OK) // 2
    p.write_bytes(gzip.compress(OK[:half].encode()) + gzip.compress(OK[half:].encode()))
    assert len(load_spec(p).regions) == 1


@pytest.mark.parametrize("data,words", [
    (gzip.compress(OK.encode(), mtime=0)[:-12], "truncated gzip"),  # (fixed id: xdist)
    (b"\x1f\x8b" + b"garbage" * 10, "corrupt gzip"),
    (b"\xff\xfe(assert)", "not UTF-8"),
])
def test_bad_files(tmp_path, data, words):
    p = tmp_path / "bad.vnnlib"
    p.write_bytes(data)
    with pytest.raises(SpecError, match=words):
        load_spec(p)


def test_large_plain_file_is_refused(tmp_path):
    p = tmp_path / "big.vnnlib"
    p.write_text(OK + " " * 5000)
    with pytest.raises(SpecError, match="larger than the limit"):
        load_spec(p, max_bytes=1000)


def test_missing_file():
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec("/nonexistent/x.vnnlib")
    with pytest.raises(SpecError):
        load_query_info("/nonexistent/x.vnnlib")


def test_huge_variable_index_is_refused_without_allocating():
    text = ("(declare-const X_99999999999 Real)\n(declare-const Y_0 Real)\n"
            "(assert (<= X_99999999999 1))\n(assert (>= X_99999999999 0))\n(assert (<= Y_0 0))\n")
    with pytest.raises(SpecError, match="X_0 is not declared"):
        parse_vnnlib(text)


@pytest.mark.parametrize("text", [
    "(declare-const X_" + "9" * 5000 + " Real)\n",
    "(vnnlib-version <2.0>)\n(declare-network N (declare-input X float32 [1,"
    + "9" * 5000 + "]) (declare-output Y float32 [1,1]))\n",
])
def test_integers_of_thousands_of_digits_are_spec_errors(text):
    # int() of more than 4,300 digits raises ValueError (it was an internal error, exit 3)
    with pytest.raises(SpecError, match="digits"):
        parse_vnnlib(text)
