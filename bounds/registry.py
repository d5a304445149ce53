"""One registry of op rules, explicit and loud.

A rule states everything the engines know about one IR op: its concrete batched ``forward``,
its interval ``ibp``, the linear ``relax``-ation of elementwise nonlinearities, an optional
custom ``backward`` for CROWN, and ``traits`` that let the engines derive what is not given:

* ``affine``: the output is affine in the dynamic inputs (constants fixed). CROWN's backward step
  is then the vector-Jacobian product of ``forward`` unless a faster ``backward`` is given.
* ``monotone``: nondecreasing in every dynamic input, so IBP is ``forward(lower), forward(upper)``.
* ``elementwise``: output element i depends on input element i only (needed for ``relax``).
* ``convex`` / ``concave`` / ``piecewise_linear``: shape claims about an elementwise op (checked
  against the op's values by the rule tests).
* ``box_preserving``: when the node is affine, a box of inputs maps onto a box of outputs
  (coordinates stay independent: moves and per-coordinate maps with constants).
* ``domain``: the inputs where the op is defined (the rule raises ``DomainError`` outside).

Four more fields have no default, so a rule that forgets one does not construct
(``TypeError``) and the rule tests check what each holds:

* ``alpha``: the free relaxation parameters alpha-CROWN optimises (:class:`Alpha`), or None.
* ``rounding``: how far float32 evaluation may stray from exact arithmetic (:class:`Rounding`,
  the error model of ``bounds.engine.rounding``).
* ``split``: how branch and bound splits the op's input (:class:`Split`), or None.
* ``milp``: how the MILP encodes the op (:class:`Milp`; ``Milp("none")`` when it cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


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
    box_preserving: bool = False
    domain: tuple[float, float] = (float("-inf"), float("inf"))


def _always(node) -> bool:
    return True


@dataclass(frozen=True)
class Alpha:
    """alpha-CROWN's parameters of a rule; any value in [low, high] gives a sound bound.

    Elementwise (``structured`` False): ``relax`` takes alpha [B, S, *shape] and
    ``init(lower, upper, attrs)`` gives its start from the input bounds (and the node's
    attributes, where they place kinks). Structured: ``backward`` takes
    a rule-specific alpha and ``init(node, args, n_spec)`` gives it (None: none for this node);
    ``applies(node)`` says whether the node uses one at all (e.g. products of two dynamic
    operands only)."""

    init: Callable
    structured: bool = False
    low: float = 0.0
    high: float = 1.0
    applies: Callable = _always


class Rounding(Enum):
    """Float32 error class of an op (the model and its citation: ``bounds.engine.rounding``)."""

    EXACT = "exact"  # data movement, max, comparisons, steps: nothing rounds
    ARITHMETIC = "arithmetic"  # at most two roundings of the output: 2u |y|
    DOT = "dot"  # a dot product plus bias: gamma(n + 1) (|W| |x| + |b|)
    GENERIC = "generic"  # library functions with no error bound: the generic allowance of |y|
    GENERIC_INPUT = "generic_input"  # generic, plus a term growing like eps |x| (GELU)
    # x^p: for p = 2 or 3 products (one or two roundings, and underflow), else generic
    POWER = "power"
    SLACK = "slack"  # stated by the node: relative * (|x| + |s|) (``bounds.rules.slack``)
    # interpolation at float32 coordinates: grows with the image's size times the largest
    # pixel magnitude the taps can reach (``bounds.rules.grid_sample.sampling_error``)
    SAMPLING = "sampling"


@dataclass(frozen=True)
class TableGrid:
    """A branching-point lookup table to build for the op (``bounds.lookup``): its key, the node
    attrs its relaxation is built with, and the uniform grid of both interval ends."""

    key: str
    attrs: tuple[tuple[str, object], ...] = ()
    lo: float = -8.0
    hi: float = 8.0
    step: float = 0.05


@dataclass(frozen=True)
class Split:
    """How branch and bound splits the op's input interval [l, u] at a point strictly inside.

    ``point``: "zero" (the kink: 0 where l < 0 < u, else the midpoint), "kinks" (a kink of
    the op's piecewise-linear MILP form inside (l, u), else the midpoint), "table" (the
    looked-up optimum of the op's table, the midpoint where none applies) or "midpoint".
    ``search``: who offers these neurons as candidates: "sign" (the Relu search: sign splits
    with beta-CROWN), "interval" (GenBaB: the children carry [l, p] and [p, u]), "operands"
    (GenBaB splits the operands of a product of two dynamic values) or "none" (not offered).
    ``tables``: the tables of point "table"; ``table_key(attrs)`` picks one for a node (the
    only table's key by default). ``scale_of(attrs)``: s where the op is its table's curve
    with the input scaled, f(x) = g(s x) / s (Swish at any alpha, SiLU's table): the table is
    read at [s l, s u] and its point divided by s (planes and areas scale alike, so the
    optimum maps onto the optimum)."""

    point: Literal["zero", "kinks", "table", "midpoint"]
    search: Literal["sign", "interval", "operands", "none"]
    tables: tuple[TableGrid, ...] = ()
    key_of: Callable[[Mapping], str] | None = None
    scale_of: Callable[[Mapping], float] | None = None

    def table_key(self, attrs: Mapping | None = None) -> str | None:
        """The table key for a node with ``attrs`` (None: the op has no table)."""
        if not self.tables:
            return None
        if self.key_of is not None:
            return self.key_of(attrs or {})
        return self.tables[0].key


@dataclass(frozen=True)
class Kinks:
    """y = const + slope x + sum_k weight_k relu(x - at_k): a piecewise-linear op's exact form."""

    const: float
    slope: float
    terms: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Milp:
    """How ``verifier.milp`` encodes the op.

    ``kind``: "affine" (exact, by ``forward`` on basis columns, for nodes that are affine;
    other nodes of the op are not encoded), "kinks" (exact big-M Relus of ``kinks(attrs)``,
    from the node's attributes), "window_max" (exact big-M max over the windows ``forward``
    reads), "argmax" (big-M: the index of a largest element along the node's axis), "leaves"
    (TreeLeaves: one binary per reachable leaf of each tree), "relaxed" (the rule's planes:
    sound, but a MILP point is only a candidate) or "none" (not encodable).
    ``zero_kink``: every kink of the op is at 0 (Relu-like: one binary per unstable neuron)."""

    kind: Literal["affine", "kinks", "window_max", "argmax", "leaves", "relaxed", "none"]
    kinks: Callable[[Mapping], Kinks] | None = None
    zero_kink: bool = False


@dataclass(frozen=True)
class OpRule:
    op: str
    forward: Callable
    traits: OpTraits = field(default_factory=OpTraits)
    ibp: Callable | None = None
    relax: Callable | None = None
    backward: Callable | None = None
    doc: str = ""
    # node -> True where the output depends on the input only through trunc(x) (a cast to an
    # integer type): input splitting bisects such inputs at integers (verifier/bab/integer_split)
    reads_integer: Callable[[object], bool] | None = None
    # no defaults: each rule states them (None where the op has none)
    alpha: Alpha | None = field(kw_only=True)
    rounding: Rounding = field(kw_only=True)
    split: Split | None = field(kw_only=True)
    milp: Milp = field(kw_only=True)
    # Kink rules whose alpha planes are alpha x at some positions and fixed elsewhere:
    # (lower, upper) -> (fixed lower slope, alpha's 0/1 mask, upper slope, upper offset) in the
    # bounds' dtype, the planes ``relax`` gives for any alpha; the engine then takes the step
    # itself (``bounds.engine.kink_step``). None: the engine relaxes with ``relax``.
    alpha_planes: Callable | None = field(default=None, kw_only=True)
    # (node, args) -> a lower bound every evaluation of the node meets, exact or float32
    # (broadcastable to the output; -inf where none is known), or None: IBP raises its lower
    # ends to it after the rounding allowance (``bounds.engine.ibp``), which widens both ends
    # alike and so takes values that cannot go negative below 0 (a LayerNorm's variance:
    # the Sqrt after it had no bound). ``bounds.rules.floors`` has the common ones.
    floor: Callable | None = field(default=None, kw_only=True)
    # (node, args) -> the forward's values with a gradient where the forward's is zero almost
    # everywhere (a step: Sign, Floor, Round), or None: the forward's own. Only the attack's
    # descent reads it (``run_graph(surrogate=True)``: straight-through gradients through
    # binarised and quantised layers); values are the forward's, bit for bit.
    surrogate: Callable | None = field(default=None, kw_only=True)


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
