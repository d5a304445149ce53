"""One registry of op rules, explicit and loud.

A rule states the math of one IR op: its concrete batched ``forward``, its interval ``ibp``, the
linear ``relax``-ation of elementwise nonlinearities, an optional custom ``backward`` for CROWN,
its ``milp`` encoding, and ``traits`` that let the engines derive what is not given:

* ``affine``: the output is affine in the dynamic inputs (constants fixed). CROWN's backward step
  is then the vector-Jacobian product of ``forward`` unless a faster ``backward`` is given.
* ``monotone``: nondecreasing in every dynamic input, so IBP is ``forward(lower), forward(upper)``.
* ``elementwise``: output element i depends on input element i only (needed for ``relax``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class UnsupportedOpError(Exception):
    """An op has no rule, or this use of it is not handled (``reason``, e.g. an input-dependent
    operand that must be constant). Names the op, the node and what is supported."""

    def __init__(self, op: str, node: str = "", known: Iterable[str] = (), reason: str = ""):
        self.op, self.node, self.known, self.reason = op, node, sorted(set(known)), reason
        where = f" (node {node!r})" if node else ""
        if reason:
            super().__init__(f"unsupported use of operator {op!r}{where}: {reason}")
        else:
            super().__init__(
                f"unsupported operator {op!r}{where}; supported: {', '.join(self.known)}"
            )


@dataclass(frozen=True)
class OpTraits:
    affine: bool = False
    monotone: bool = False
    elementwise: bool = False
    convex: bool = False
    concave: bool = False
    piecewise_linear: bool = False
    splittable: bool = False
    domain: tuple[float, float] = (float("-inf"), float("inf"))


@dataclass(frozen=True)
class OpRule:
    op: str
    forward: Callable
    traits: OpTraits = field(default_factory=OpTraits)
    ibp: Callable | None = None
    relax: Callable | None = None
    backward: Callable | None = None
    milp: Callable | None = None
    doc: str = ""


class Registry:
    """A name -> entry map that refuses duplicates and names what it knows when asked for more."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict = {}

    def register(self, key, entry) -> None:
        if key in self._entries:
            raise ValueError(f"duplicate {self.kind} registration for {key!r}")
        self._entries[key] = entry

    def get(self, key, node: str = ""):
        try:
            return self._entries[key]
        except KeyError:
            raise UnsupportedOpError(str(key), node, [str(k) for k in self._entries]) from None

    def __contains__(self, key) -> bool:
        return key in self._entries

    def keys(self) -> list:
        return sorted(self._entries)

    def items(self):
        return sorted(self._entries.items())


def build_rules() -> Registry:
    """The registry of every op rule, built by explicit imports of the rule modules."""
    from bounds.rules import ALL_RULE_MODULES

    registry = Registry("op rule")
    for module in ALL_RULE_MODULES:
        for rule in module.RULES:
            registry.register(rule.op, rule)
    return registry


_RULES: Registry | None = None


def rules() -> Registry:
    """The process-wide rule registry (built on first use, never at import time)."""
    global _RULES
    if _RULES is None:
        _RULES = build_rules()
    return _RULES
