"""Recursive-descent parser for VNN-LIB 1.0 and 2.0 assertions.

The parser turns the token list straight into compact atoms and DNFs, without an AST:

* every comparison becomes one or two *atoms*, ``sum_i c_i v_i <= b`` (``strict`` for ``<``):
  an input atom is a bound on one input (``id < 0``), an output atom a linear constraint over
  outputs (``id >= 0``, deduplicated);
* every formula becomes its DNF, a list of conjunctions (tuples of atom ids): ``[()]`` is true,
  ``[]`` is false. ``or`` concatenates, ``and`` multiplies (with a size cap).

Top-level asserts and the children of top-level ``and``s are kept apart as a list of
conjuncts, so the usual VNN-COMP shape (thousands of input-bound asserts plus one ``or`` over
outputs) is never multiplied out. Variables are coded as ints: input ``i`` is ``2*i``, output
``j`` is ``2*j + 1``.
"""

from __future__ import annotations

import math
from fractions import Fraction

from verifier.errors import SpecError
from verifier.spec.arithmetic import ArithmeticMixin, lin
from verifier.spec.declarations import Declarations
from verifier.spec.extras import Extras
from verifier.spec.tokens import describe, error_at, tokenize

_COMPARISONS = frozenset({"<=", ">=", "<", ">", "=", "==", "!=", "distinct"})
_SIMPLE = frozenset({"<=", ">=", "<", ">"})
_SKIPPED = frozenset({"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"})
MAX_DEPTH = 200
Dnf = list[tuple[int, ...]]


class Parser(ArithmeticMixin):
    """Parses one VNN-LIB text into declarations, atoms and top-level conjuncts."""

    def __init__(self, text: str, source: str = "", max_terms: int = 1_000_000,
                 compose: bool = False):
        self.text, self.source, self.max_terms = text, source, max_terms
        # compose: accept what only a rewritten model can verify (hidden tensors, constraints
        # over several inputs or mixing inputs and outputs, products); see verifier.spec.extras
        self.compose = compose
        self.extras = Extras()
        self.toks = tokenize(text)
        self.n = len(self.toks)
        self.i = 0
        self.cmd_start = 0
        self.decls = Declarations(self)
        # input atoms: bound on input xv[k]; upper if xu[k] else lower
        self.xv: list[int] = []
        self.xu: list[bool] = []
        self.xval: list[float] = []
        # output atoms: sparse row, rhs, strict
        self.ykey: dict[tuple, int] = {}
        self.yrows: list[tuple[tuple[int, float], ...]] = []
        self.yb: list[float] = []
        self.ys: list[bool] = []
        self.base: list[int] = []  # atoms of conjuncts that are single conjunctions
        self.ors: list[Dnf] = []  # conjuncts with several disjuncts
        self.false = False  # some top-level conjunct is false
        self.n_asserts = 0
        self.declarations_only = False  # stop at the first assert (load_query_info)

    # -- errors and token helpers ----------------------------------------------------------

    def err(self, message: str, index: int | None = None) -> SpecError:
        return error_at(self.text, self.source, self.i if index is None else index, message)

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < self.n else None

    def expect(self, tok: str) -> None:
        got = self.peek()
        if got != tok:
            extra = ""
            if got is None and tok == ")":
                from verifier.spec.tokens import line_col, token_offset

                line, col = line_col(self.text, token_offset(self.text, self.cmd_start))
                extra = f" (unbalanced parentheses: the '(' at {line}:{col} is never closed)"
            raise self.err(f"expected {tok!r} but found {describe(got)}{extra}")
        self.i += 1

    def next_token(self, what: str) -> str:
        tok = self.peek()
        if tok is None or tok in "()":
            raise self.err(f"expected {what} but found {describe(tok)}")
        self.i += 1
        return tok

    def skip_balanced(self) -> None:
        """Skip the rest of a command whose '(' and keyword were consumed."""
        depth = 1
        while depth:
            tok = self.peek()
            if tok is None:
                self.expect(")")
            depth += (tok == "(") - (tok == ")")
            self.i += 1

    # -- commands --------------------------------------------------------------------------

    def parse(self) -> Parser:
        if not self.toks:
            raise SpecError(f"{self.source or '<spec>'}: empty spec (no declarations, no asserts)")
        toks, n = self.toks, self.n
        while self.i < n:
            i = self.cmd_start = self.i
            if (i + 7 < n and toks[i + 1] == "assert" and toks[i + 3] in _SIMPLE
                    and toks[i + 6] == ")" and toks[i + 7] == ")" and toks[i + 2] == "("
                    and toks[i + 4] not in "()" and toks[i + 5] not in "()"):
                # fast path: (assert (op atom atom)), the input bounds of VNN-COMP specs
                self.n_asserts += 1
                lhs, rhs = self.leaf(toks[i + 4], i + 4), self.leaf(toks[i + 5], i + 5)
                strict = toks[i + 3] in ("<", ">")
                if toks[i + 3][0] == "<":
                    a = self.le(lhs, rhs, strict, i + 2)
                else:
                    a = self.le(rhs, lhs, strict, i + 2)
                if a is False:
                    self.false = True
                elif a is not True:
                    self.base.append(a)
                self.i = i + 8
                continue
            if self.toks[self.i] != "(":
                raise self.err(f"expected '(' but found {describe(self.toks[self.i])}")
            self.i += 1
            cmd = self.next_token("a command")
            if cmd == "assert":
                if self.declarations_only:
                    return self
                self.n_asserts += 1
                self.conjuncts(0)
                self.expect(")")
            elif cmd in _SKIPPED:
                self.skip_balanced()
            elif not self.decls.command(cmd):
                raise self.err(f"unknown command {cmd!r}", self.i - 1)
        if self.n_asserts == 0:
            raise SpecError(f"{self.source or '<spec>'}: the spec has no assert")
        return self

    def conjuncts(self, depth: int) -> None:
        """Parse one asserted formula, splitting top-level ``and``s into separate conjuncts."""
        if self.peek() == "(" and self.i + 1 < self.n and self.toks[self.i + 1] == "and":
            self.i += 2
            while self.peek() != ")":
                if self.peek() is None:
                    self.expect(")")
                self.conjuncts(depth + 1)
            self.i += 1
            return
        dnf = self.formula(depth)
        if not dnf:
            self.false = True
        elif len(dnf) == 1:
            self.base.extend(dnf[0])
        else:
            self.ors.append(dnf)

    # -- formulas --------------------------------------------------------------------------

    def formula(self, depth: int) -> Dnf:
        tok = self.peek()
        if tok != "(":
            if tok in ("true", "false"):
                self.i += 1
                return [()] if tok == "true" else []
            raise self.err(f"expected a formula '(' but found {describe(tok)}")
        start = self.i
        self.i += 1
        op = self.next_token("'and', 'or' or a comparison")
        if depth > MAX_DEPTH:
            raise self.err(f"formula nested more than {MAX_DEPTH} deep", start)
        if op == "and" or op == "or":
            return self.connective(op == "and", start, depth)
        if op in _COMPARISONS:
            return self.comparison(op, start, depth)
        raise self.err(f"expected 'and', 'or' or a comparison but found {describe(op)}", start + 1)

    def connective(self, is_and: bool, start: int, depth: int) -> Dnf:
        """The children of an ``and``/``or`` (its '(' and keyword consumed) and its DNF."""
        toks, n = self.toks, self.n
        parts: list[Dnf] = []
        atoms: list[int] = []  # simple comparisons, kept out of the DNF machinery
        false = False
        while True:
            j = self.i
            tok = toks[j] if j < n else None
            if tok == ")":
                break
            if (tok == "(" and j + 4 < n and toks[j + 4] == ")" and toks[j + 1] in _SIMPLE
                    and toks[j + 2] not in "()" and toks[j + 3] not in "()"):
                a = self.simple(toks[j + 1], toks[j + 2], toks[j + 3], j)
                self.i = j + 5
                if not is_and:  # keep the order of disjuncts
                    parts.append([] if a is False else [()] if a is True else [(a,)])
                elif a is False:
                    false = True
                elif a is not True:
                    atoms.append(a)
                continue
            if tok is None:
                self.expect(")")
            parts.append(self.formula(depth + 1))
        self.i += 1
        if is_and:
            if false:
                return []
            return self.conj(parts + [[tuple(atoms)]], start) if parts else [tuple(atoms)]
        return self.disj(parts, start)

    def simple(self, op: str, a: str, b: str, at: int) -> int | bool:
        """Atom of ``(op a b)`` for op in <=, >=, <, > with two plain tokens."""
        lhs, rhs = self.leaf(a, at + 2), self.leaf(b, at + 3)
        if op[0] == "<":
            return self.le(lhs, rhs, op == "<", at)
        return self.le(rhs, lhs, op == ">", at)

    def disj(self, parts: list[Dnf], at: int) -> Dnf:
        out: Dnf = []
        for p in parts:
            out.extend(p)
        if len(out) > self.max_terms:
            raise self.err(f"formula has more than {self.max_terms} disjuncts", at)
        return out

    def conj(self, parts: list[Dnf], at: int) -> Dnf:
        out: Dnf = [()]
        for p in sorted(parts, key=len):
            if len(p) == 1:
                t = p[0]
                out = [a + t for a in out]
                continue
            if len(out) * len(p) > self.max_terms:
                raise self.err(
                    f"converting this formula to DNF gives more than {self.max_terms} "
                    "disjuncts (product of 'or's); simplify the spec", at)
            out = [a + b for a in out for b in p]
        return out

    def comparison(self, op: str, start: int, depth: int) -> Dnf:
        toks, i = self.toks, self.i
        if i + 2 < self.n and toks[i + 2] == ")" and toks[i] != "(" and toks[i + 1] not in "()":
            # fast path: (op atom atom), the shape of nearly every VNN-COMP comparison
            lhs, rhs = self.leaf(toks[i], i), self.leaf(toks[i + 1], i + 1)
            self.i = i + 3
            return self.compare2(op, lhs, rhs, start)
        args = self.arith_args(depth)
        if len(args) < 2:
            raise self.err(f"{op!r} needs two arguments, found {len(args)}", start + 1)
        if len(args) == 2:
            return self.compare2(op, args[0], args[1], start)
        if op in ("!=", "distinct"):
            raise self.err(f"{op!r} with more than two arguments is not supported", start + 1)
        pairs = zip(args[:-1], args[1:], strict=True)
        return self.conj([self.compare2(op, a, b, start) for a, b in pairs], start)

    def compare2(self, op: str, lhs, rhs, at: int) -> Dnf:
        if op in ("<=", "<"):
            return _term(self.le(lhs, rhs, op == "<", at))
        if op in (">=", ">"):
            return _term(self.le(rhs, lhs, op == ">", at))
        if op in ("=", "=="):
            return _term(self.le(lhs, rhs, False, at), self.le(rhs, lhs, False, at))
        # a != b  <=>  a < b  or  a > b
        return _term(self.le(lhs, rhs, True, at)) + _term(self.le(rhs, lhs, True, at))

    # -- atoms -----------------------------------------------------------------------------

    def le(self, lhs, rhs, strict: bool, at: int) -> int | bool:
        """Atom id for ``lhs <= rhs`` (``<`` if strict), or its truth value if constant."""
        tl, tr = type(lhs), type(rhs)
        if tl is int and tr is float:  # fast paths: variable vs constant, output vs output
            if lhs & 1:
                return self.yatom(((lhs >> 1, 1.0),), rhs, strict)
            return self.xbound(lhs >> 1, True, rhs)
        if tl is float and tr is int:
            if rhs & 1:
                return self.yatom(((rhs >> 1, -1.0),), -lhs, strict)
            return self.xbound(rhs >> 1, False, lhs)
        if tl is int and tr is int and lhs & rhs & 1 and lhs != rhs:
            j, k = lhs >> 1, rhs >> 1
            return self.yatom(((j, 1.0), (k, -1.0)) if j < k else ((k, -1.0), (j, 1.0)),
                              0.0, strict)
        lc, lk = lin(lhs)
        rc, rk = lin(rhs)
        coefs = dict(lc)
        for v, c in rc.items():
            coefs[v] = coefs.get(v, 0.0) - c
        coefs = {v: c for v, c in coefs.items() if c != 0.0}
        b = rk - lk
        if not coefs:
            return 0.0 < b if strict else 0.0 <= b
        if not math.isfinite(b):
            raise self.err("constant out of range (not a finite float64)", at)
        return self.atom(coefs, b, strict, at)

    def atom(self, coefs: dict[int, float], b: float, strict: bool, at: int) -> int:
        odd = [v & 1 for v in coefs]
        if not any(odd):
            if len(coefs) > 1:
                if self.compose:
                    return self.lifted(coefs, b, strict)
                names = ", ".join(self.decls.var_name(v) for v in sorted(coefs))
                raise self.err(f"unsupported: linear constraint over several inputs ({names}); "
                               "only bounds on single inputs are supported", at)
            ((v, c),) = coefs.items()
            # closure: x < b is bounded as x <= b (see verifier/spec/__init__.py)
            val = b / c
            if c not in (1.0, -1.0) and Fraction(val) * Fraction(c) != Fraction(b):
                # the quotient was rounded: widen the bound by one ulp, outward
                val = math.nextafter(val, math.inf if c > 0 else -math.inf)
            return self.xbound(v >> 1, c > 0, val)
        if not all(odd):
            if self.compose:
                return self.lifted(coefs, b, strict)
            names = ", ".join(self.decls.var_name(v) for v in sorted(coefs))
            raise self.err(f"unsupported: constraint mixes inputs and outputs ({names})", at)
        return self.yatom(tuple(sorted((v >> 1, c) for v, c in coefs.items())), b, strict)

    def lifted(self, coefs: dict[int, float], b: float, strict: bool) -> int:
        """Output atom of a constraint that names inputs: each input is replaced by its
        passthrough output (the rewritten model copies it to the output vector)."""
        row = {}
        for v, c in coefs.items():
            code = self.extras.passthrough(v >> 1) if not v & 1 else v
            row[code >> 1] = c
        return self.yatom(tuple(sorted(row.items())), b, strict)

    def yatom(self, row: tuple[tuple[int, float], ...], b: float, strict: bool) -> int:
        """Atom id of ``sum c * y[j] <= b`` over ``row = ((j, c), ...)``, deduplicated."""
        key = (row, b, strict)
        k = self.ykey.get(key)
        if k is None:
            k = self.ykey[key] = len(self.yrows)
            self.yrows.append(row)
            self.yb.append(b)
            self.ys.append(strict)
        return k

    def xbound(self, index: int, upper: bool, value: float) -> int:
        """Atom id of ``x[index] <= value`` (upper) or ``x[index] >= value``."""
        self.xv.append(index)
        self.xu.append(upper)
        self.xval.append(value)
        return -len(self.xv)


def _term(*atoms: int | bool) -> Dnf:
    """DNF of the conjunction of atoms (``True``/``False`` for constant comparisons)."""
    if any(a is False for a in atoms):
        return []
    return [tuple(a for a in atoms if a is not True)]
