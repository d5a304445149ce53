"""Derived output variables of a query: input passthroughs and monomials.

The parser codes variables as ints (input ``i`` is ``2*i``, output ``j`` is ``2*j + 1``).
Derived variables are outputs numbered from ``EXTRA_BASE`` on, so they can be created before
the number of declared outputs is known; ``verifier.spec.normalize`` renumbers them to follow
the declared values (see :class:`verifier.spec.layout.Layout`).

* a *passthrough* of input ``i`` is an output equal to that input: a constraint over several
  inputs, or over inputs and outputs, becomes a constraint over outputs only;
* a *monomial* is a product of variables (inputs or declared outputs, with powers): a
  polynomial constraint becomes linear in the monomials, and the rewritten model computes
  each monomial with Mul/Pow nodes, which the bound engine relaxes soundly like any graph op.
"""

from __future__ import annotations

from collections import Counter

EXTRA_BASE = 1 << 40  # output index of the first derived variable (before renumbering)
MAX_DEGREE = 8  # highest total degree of a monomial
MAX_POLY_TERMS = 10_000  # most terms while multiplying out one product

Key = tuple[int, ...]  # sorted variable codes, repeated by power


class Extras:
    """The derived variables created while parsing, in creation order."""

    def __init__(self) -> None:
        self.kinds: list[tuple[str, object]] = []  # ("x", input index) | ("m", Key)
        self._codes: dict[tuple[str, object], int] = {}

    def __len__(self) -> int:
        return len(self.kinds)

    def _code(self, item: tuple[str, object]) -> int:
        code = self._codes.get(item)
        if code is None:
            code = self._codes[item] = 2 * (EXTRA_BASE + len(self.kinds)) + 1
            self.kinds.append(item)
        return code

    def passthrough(self, input_index: int) -> int:
        """Code of the output that copies flat input ``input_index``."""
        return self._code(("x", input_index))

    def monomial(self, key: Key) -> int:
        """Code of the output equal to the product of the variables in ``key``."""
        return self._code(("m", key))

    def key_of(self, code: int) -> Key:
        """The monomial a code stands for: its own key unless it is a derived monomial."""
        j = code >> 1
        if code & 1 and j >= EXTRA_BASE:
            kind, what = self.kinds[j - EXTRA_BASE]
            if kind == "m":
                return what  # type: ignore[return-value]
        return (code,)


def is_extra(code: int) -> bool:
    """True for the code of a derived variable."""
    return bool(code & 1) and (code >> 1) >= EXTRA_BASE


def _polynomial(a, extras: Extras) -> dict[Key, float]:
    """A parser value (variable code, constant or linear form) as {monomial key: coef}."""
    if type(a) is int:
        return {extras.key_of(a): 1.0}
    if type(a) is float:
        return {(): a}
    coefs, const = a
    poly: dict[Key, float] = {(): const} if const else {}
    for v, c in coefs.items():
        key = extras.key_of(v)
        poly[key] = poly.get(key, 0.0) + c
    return poly


def _multiply(p: dict[Key, float], q: dict[Key, float]) -> dict[Key, float]:
    if len(p) * len(q) > MAX_POLY_TERMS:
        raise ValueError(f"a product multiplies out to more than {MAX_POLY_TERMS} terms")
    out: dict[Key, float] = {}
    for kp, cp in p.items():
        for kq, cq in q.items():
            key = tuple(sorted(kp + kq))
            if len(key) > MAX_DEGREE:
                raise ValueError(f"a monomial of degree {len(key)} (the limit is {MAX_DEGREE})")
            out[key] = out.get(key, 0.0) + cp * cq
    return out


def polynomial_product(terms: list, extras: Extras):
    """The product of parser values as a linear form over variables and monomial codes."""
    poly: dict[Key, float] = {(): 1.0}
    for t in terms:
        poly = _multiply(poly, _polynomial(t, extras))
    coefs: dict[int, float] = {}
    const = 0.0
    for key, c in poly.items():
        if c == 0.0:
            continue
        if not key:
            const += c
            continue
        code = key[0] if len(key) == 1 else extras.monomial(key)
        coefs[code] = coefs.get(code, 0.0) + c
    return (coefs, const) if coefs else const


def powers(key: Key) -> tuple[tuple[int, int], ...]:
    """A monomial key as ((variable code, power), ...), codes ascending."""
    return tuple(sorted(Counter(key).items()))
