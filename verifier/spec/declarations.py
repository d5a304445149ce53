"""Variable declarations of VNN-LIB 1.0 (``declare-const X_i Real``) and 2.0 (``declare-network``).

Variables are coded as ints for the parser: flattened input ``i`` is ``2*i``, flattened output
``j`` is ``2*j + 1``. In 2.0, ``X[0,3]`` is the row-major flat index into its tensor, offset by
the sizes of the input (or output) tensors declared before it.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from verifier.errors import SpecError
from verifier.spec.extras import EXTRA_BASE, is_extra
from verifier.spec.query import NetworkDecl, QueryInfo, TensorDecl

if TYPE_CHECKING:
    from verifier.spec.parser import Parser

_V1_NAME = re.compile(r"([XY])_(0|[1-9][0-9]*)").fullmatch
_V2_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*").fullmatch
_INT = re.compile(r"\s*(0|[1-9][0-9]*)\s*").fullmatch
# Indices and dimensions longer than this are refused before int() sees them: no tensor has
# 10^18 elements, and Python refuses int() of more than 4,300 digits with a ValueError.
MAX_INT_DIGITS = 18


def small_int(digits: str) -> int | None:
    """``int(digits)`` for a string of at most MAX_INT_DIGITS digits (spaces around allowed),
    else None."""
    digits = digits.strip()
    return int(digits) if len(digits) <= MAX_INT_DIGITS else None
_TENSOR_KINDS = {"declare-input": "input", "declare-output": "output", "declare-hidden": "hidden"}


class Declarations:
    """Declared variables and networks, filled in by :class:`Parser` as it meets them."""

    def __init__(self, parser: Parser):
        self.p = parser
        self.vars: dict[str, int] = {}
        self.version: str | None = None
        self.v1_inputs: set[int] = set()
        self.v1_outputs: set[int] = set()
        self.networks: list[NetworkDecl] = []
        self.tensors: dict[str, tuple[TensorDecl, int]] = {}  # name -> (decl, flat offset)
        # flat offsets: inputs; "value" = outputs (and, when composing, hidden tensors) in
        # declaration order (verifier.spec.layout)
        self.size = {"input": 0, "value": 0, "hidden": 0}

    def command(self, cmd: str) -> bool:
        """Handle a declaration command (its '(' and keyword consumed); False if not one."""
        if cmd in ("declare-const", "declare-fun"):
            self._set_version("1.0", "declare-const")
            self._declare_const(cmd == "declare-fun")
        elif cmd == "declare-network":
            self._set_version("2.0", "declare-network")
            self._declare_network()
        elif cmd == "vnnlib-version":
            tok = self.p.next_token("a version such as <2.0>")
            ver = tok.strip("<>")
            if not ver.startswith("2"):
                raise self.p.err(f"unsupported VNN-LIB version {tok}", self.p.i - 1)
            self._set_version("2.0", "vnnlib-version")
            self.p.expect(")")
        else:
            return False
        return True

    def _set_version(self, version: str, what: str) -> None:
        if self.version not in (None, version):
            raise self.p.err(f"{what} (VNN-LIB {version}) in a VNN-LIB {self.version} file",
                             self.p.i - 1)
        self.version = version

    # -- 1.0 -------------------------------------------------------------------------------

    def _declare_const(self, fun: bool) -> None:
        p = self.p
        at = p.i
        name = p.next_token("a variable name")
        if fun:
            p.expect("(")
            p.expect(")")
        sort = p.next_token("a sort such as Real")
        if sort != "Real":
            raise p.err(f"unsupported sort {sort!r} for {name} (expected Real)", p.i - 1)
        p.expect(")")
        m = _V1_NAME(name)
        if m is None:
            raise p.err(f"unsupported variable name {name!r}: VNN-LIB 1.0 inputs are X_i "
                        "and outputs Y_j", at)
        if name in self.vars:
            raise p.err(f"variable {name} declared twice", at)
        k = small_int(m.group(2))
        if k is None:
            raise p.err(f"variable {name[:24]}... has an index of {len(m.group(2))} digits; "
                        f"indices above {MAX_INT_DIGITS} digits are refused", at)
        is_out = m.group(1) == "Y"
        (self.v1_outputs if is_out else self.v1_inputs).add(k)
        self.vars[name] = 2 * k + is_out

    # -- 2.0 -------------------------------------------------------------------------------

    def _declare_network(self) -> None:
        p = self.p
        name = self._new_name("a network name")
        if any(n.name == name for n in self.networks):
            raise p.err(f"network {name} declared twice", p.i - 1)
        tensors: dict[str, list[TensorDecl]] = {"input": [], "output": [], "hidden": []}
        order: list[TensorDecl] = []
        equivalences = []
        while p.peek() == "(":
            p.i += 1
            sub = p.next_token("declare-input, declare-hidden, declare-output")
            if sub in ("isomorphic-to", "equal-to"):
                equivalences.append((sub, p.next_token("a network name")))
            elif sub in _TENSOR_KINDS:
                decl = self._tensor(_TENSOR_KINDS[sub])
                tensors[decl.kind].append(decl)
                order.append(decl)
            else:
                raise p.err(f"expected declare-input, declare-hidden or declare-output but "
                            f"found {sub!r}", p.i - 1)
            p.expect(")")
        p.expect(")")
        if not tensors["input"] or not tensors["output"]:
            raise p.err(f"network {name} needs at least one declare-input and one "
                        "declare-output", p.cmd_start)
        self.networks.append(NetworkDecl(
            name, tuple(tensors["input"]), tuple(tensors["output"]), tuple(tensors["hidden"]),
            tuple(equivalences), tuple(order)))

    def _new_name(self, what: str) -> str:
        p = self.p
        name = p.next_token(what)
        if not _V2_NAME(name):
            raise p.err(f"invalid name {name!r}", p.i - 1)
        return name

    def _tensor(self, kind: str) -> TensorDecl:
        p = self.p
        name = self._new_name("a tensor name")
        at = p.i - 1
        if name in self.tensors or any(n.name == name for n in self.networks):
            raise p.err(f"name {name} declared twice", at)
        dtype = p.next_token("an element type such as float32")
        tok = p.next_token("a shape such as [1,5]")
        shape = self._ints(tok, p.i - 1, "shape")
        if any(d == 0 for d in shape):
            raise p.err(f"shape {tok} of {name} has a zero dimension", p.i - 1)
        onnx_name = None
        if p.peek() is not None and p.peek().startswith('"'):
            onnx_name = p.next_token("an ONNX name").strip('"')
        decl = TensorDecl(name, dtype, shape, kind, onnx_name)
        space = self._space(kind)
        self.tensors[name] = (decl, self.size[space])
        self.size[space] += decl.size
        if shape == () and space != "hidden":
            self.vars[name] = 2 * self.tensors[name][1] + (kind != "input")
        return decl

    def _space(self, kind: str) -> str:
        """Which flat vector a tensor kind lives in (hidden ones only when composing)."""
        if kind == "output" or (kind == "hidden" and self.p.compose):
            return "value"
        return kind

    def _ints(self, tok: str, at: int, what: str) -> tuple[int, ...]:
        if not (tok.startswith("[") and tok.endswith("]")):
            raise self.p.err(f"expected a {what} such as [1,5] but found {tok!r}", at)
        body = tok[1:-1]
        if not body.strip():
            return ()
        parts = body.split(",")
        if not all(_INT(x) for x in parts):
            raise self.p.err(f"malformed {what} {tok[:40]!r}: expected non-negative integers", at)
        values = tuple(small_int(x) for x in parts)
        if None in values:
            raise self.p.err(f"{what} {tok[:40]!r}...: a number has more than {MAX_INT_DIGITS} "
                             "digits", at)
        return values

    def indexed(self, tok: str, at: int) -> int:
        """Variable code of an indexed tensor element such as ``X[0,3]``."""
        name, _, rest = tok.partition("[")
        entry = self.tensors.get(name)
        if entry is None:
            raise self.p.err(f"unknown variable {name!r}", at)
        decl, offset = entry
        idx = self._ints("[" + rest, at, "index")
        if len(idx) != len(decl.shape) or any(i >= d for i, d in zip(idx, decl.shape, strict=True)):
            dims = ",".join(map(str, decl.shape))
            raise self.p.err(f"index {tok} out of range for {name} of shape [{dims}]", at)
        if decl.kind == "hidden" and not self.p.compose:
            raise self.p.err(f"unsupported: constraint on hidden tensor {name}", at)
        flat = 0
        for i, d in zip(idx, decl.shape, strict=True):
            flat = flat * d + i
        return 2 * (offset + flat) + (decl.kind != "input")

    # -- results ---------------------------------------------------------------------------

    def var_name(self, code: int) -> str:
        """Readable name of a variable code (``X_5``, or ``X[0,5]`` in 2.0)."""
        flat, is_out = code >> 1, code & 1
        if is_extra(code):
            return self._extra_name(code)
        if self.version != "2.0":
            return f"{'Y' if is_out else 'X'}_{flat}"
        space = "value" if is_out else "input"
        for decl, offset in self.tensors.values():
            if self._space(decl.kind) == space and offset <= flat < offset + decl.size:
                rel, idx = flat - offset, []
                for d in reversed(decl.shape):
                    rel, r = divmod(rel, d)
                    idx.append(r)
                return f"{decl.name}[{','.join(map(str, reversed(idx)))}]" if idx else decl.name
        return f"{space}#{flat}"

    def _extra_name(self, code: int) -> str:
        kind, what = self.p.extras.kinds[(code >> 1) - EXTRA_BASE]
        if kind == "x":
            return self.var_name(2 * what)
        return "*".join(self.var_name(v) for v in what)

    def info(self) -> QueryInfo:
        return QueryInfo(self.version or "1.0", tuple(self.networks))

    def sizes(self) -> tuple[int, int]:
        """(n_inputs, n_outputs) of the one network that can be verified; SpecError if not one."""
        src = self.p.source or "<spec>"
        if self.version != "2.0":
            for label, idx in (("input", self.v1_inputs), ("output", self.v1_outputs)):
                if not idx:
                    raise SpecError(f"{src}: no {label} variables declared")
                gap = _first_gap(idx)
                if gap is not None:
                    var = "X" if label == "input" else "Y"
                    raise SpecError(f"{src}: {label} variables are not numbered from 0 without "
                                    f"gaps: {var}_{gap} is not declared")
            return len(self.v1_inputs), len(self.v1_outputs)
        if self.p.compose:
            return self.size["input"], self.size["value"]
        if len(self.networks) != 1:
            names = ", ".join(n.name for n in self.networks) or "none"
            raise SpecError(f"{src}: unsupported: exactly one declared network can be verified "
                            f"(declared: {names})")
        net = self.networks[0]
        if len(net.inputs) != 1 or len(net.outputs) != 1:
            raise SpecError(f"{src}: unsupported: network {net.name} must have exactly one input "
                            f"and one output tensor (has {len(net.inputs)} and "
                            f"{len(net.outputs)})")
        return math.prod(net.inputs[0].shape), math.prod(net.outputs[0].shape)


def _first_gap(indices: set[int]) -> int | None:
    """The smallest non-negative integer missing from ``indices`` below its maximum, or None.

    Walks the sorted indices, so memory stays proportional to what was declared (a declared
    X_99999999999 must not allocate a range of that size).
    """
    expected = 0
    for i in sorted(indices):
        if i != expected:
            return expected
        expected += 1
    return None
