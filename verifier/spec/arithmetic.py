"""Arithmetic terms of VNN-LIB assertions: variables, constants, ``+ - *``.

A term is a variable code (int: input ``i`` is ``2*i``, output ``j`` is ``2*j + 1``), a float
constant, or a linear form ``({code: coef}, const)``. A product of several non-constant terms
is multiplied out (compose mode only); each monomial of degree two or more becomes a derived
output variable (``verifier.spec.extras``), so every term stays linear.
"""

from __future__ import annotations

import math
import re

from verifier.spec.extras import polynomial_product
from verifier.spec.tokens import describe

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?").fullmatch
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.']*").fullmatch
MAX_DEPTH = 200


class ArithmeticMixin:
    """The parser's methods for arithmetic terms (mixed into ``Parser``)."""

    def arith(self, depth: int):
        """A variable code (int), a constant (float) or a linear form ``(coefs, const)``."""
        tok = self.peek()
        if tok is None:
            raise self.err("expected a number or variable but found end of file")
        if tok != "(":
            self.i += 1
            return self.leaf(tok, self.i - 1)
        start = self.i
        self.i += 1
        op = self.next_token("an arithmetic operator")
        if depth > MAX_DEPTH:
            raise self.err(f"expression nested more than {MAX_DEPTH} deep", start)
        args = self.arith_args(depth)
        if not args:
            raise self.err(f"{op!r} needs arguments", start + 1)
        if op == "+":
            return add(args, 1.0)
        if op == "-":
            if len(args) == 1:
                return scale(args[0], -1.0)
            return add([args[0], add(args[1:], -1.0)], 1.0)
        if op == "*":
            return self.product(args, start)
        raise self.err(f"unsupported arithmetic operator {op!r} (supported: + - *)", start + 1)

    def arith_args(self, depth: int) -> list:
        """The arithmetic arguments up to the closing parenthesis, which is consumed."""
        args = []
        while self.peek() != ")":
            if self.peek() is None:
                self.expect(")")
            args.append(self.arith(depth + 1))
        self.i += 1
        return args

    def leaf(self, tok: str, at: int):
        """A variable code (int) or a finite constant (float) for one token."""
        v = self.decls.vars.get(tok)
        if v is not None:
            return v
        if _NUMBER(tok):
            val = float(tok)
            if not math.isfinite(val):
                raise self.err(f"constant {tok} is out of float64 range", at)
            return val
        if "[" in tok:
            return self.decls.indexed(tok, at)
        if tok == ")":
            raise self.err("expected a number or variable but found ')'", at)
        if _NAME(tok):
            raise self.err(f"unknown variable {tok!r}", at)
        raise self.err(f"expected a number or variable but found {describe(tok)}", at)

    def product(self, args: list, at: int):
        factor, terms = 1.0, []
        for a in args:
            if type(a) is float:
                factor *= a
            else:
                terms.append(a)
        if len(terms) > 1:
            if not self.compose:
                raise self.err("unsupported: product of two non-constant terms (nonlinear)", at)
            try:
                return scale(polynomial_product(terms, self.extras), factor)
            except ValueError as e:
                raise self.err(f"unsupported: {e}", at) from None
        return factor if not terms else scale(terms[0], factor)


def lin(a) -> tuple[dict[int, float], float]:
    if type(a) is int:
        return {a: 1.0}, 0.0
    if type(a) is float:
        return {}, a
    return a


def scale(a, s: float):
    if type(a) is float:
        return a * s
    coefs, k = lin(a)
    return {v: c * s for v, c in coefs.items()}, k * s


def add(args: list, sign: float):
    coefs: dict[int, float] = {}
    k = 0.0
    for a in args:
        ac, ak = lin(a)
        k += sign * ak
        for v, c in ac.items():
            coefs[v] = coefs.get(v, 0.0) + sign * c
    return (coefs, k) if coefs else k
