"""VNN-LIB 1.0 and 2.0 properties, normalised to :class:`~verifier.spec.types.Spec`.

``load_spec(path)`` / ``parse_vnnlib(text)`` give the Spec; ``load_query`` / ``parse_query``
give it with the declarations (:class:`QueryInfo`: networks, tensor names, shapes) that the 2.0
CLI needs; ``load_query_info`` reads only the declarations. Only numpy and the standard library
are imported.

Semantics chosen here:

* The asserts state the *unsafe* set; several asserts are their conjunction.
* Strict comparisons: on outputs they are kept as ``<=`` rows marked ``strict`` (bounds refute
  the closure, counterexamples are checked with ``<``); on inputs the box is closed (the
  closure of ``x < b`` is ``x <= b``), which only adds a boundary of measure zero and matches
  the competition's tolerance-based box check.
* ``=`` / ``==`` is the conjunction of ``<=`` and ``>=``; ``!=`` / ``distinct`` is ``<`` or ``>``.
* A bound ``c * x <= b`` on one input becomes ``x <= b / c`` rounded outward when inexact.
  Decimal constants are read as the nearest float64 (as every VNN-COMP tool does).
* Every input needs a finite lower and upper bound in every region (else SpecError). A region
  whose box is empty (lower > upper) is dropped; when no region remains, the Spec has zero
  regions: the unsafe set is empty and the property holds (``unsat``).
* Unsupported by default (SpecError): linear constraints over several inputs, constraints
  mixing inputs and outputs, nonlinear products, hidden tensors, 2.0 queries other than one
  network with one input and one output tensor, DNFs above ``max_terms`` disjuncts. With
  ``compose=True`` all but the last are accepted and laid out for a rewritten model
  (``verifier.spec.layout``, ``verifier.compose``).
"""

from __future__ import annotations

from pathlib import Path

from verifier.errors import SpecError
from verifier.gz import read_capped
from verifier.spec.layout import Layout
from verifier.spec.normalize import build_spec
from verifier.spec.parser import Parser
from verifier.spec.query import NetworkDecl, Query, QueryInfo, TensorDecl
from verifier.spec.types import InputRegion, OutputCondition, Spec

MAX_BYTES = 1 << 30  # default cap on the (decompressed) spec size
MAX_TERMS = 1_000_000  # default cap on disjuncts after DNF conversion

__all__ = [
    "InputRegion", "Layout", "NetworkDecl", "OutputCondition", "Query", "QueryInfo", "Spec",
    "TensorDecl",
    "load_query", "load_query_info", "load_spec", "parse_query", "parse_vnnlib", "read_text",
]


def read_text(path: str | Path, max_bytes: int = MAX_BYTES) -> str:
    """The text of a plain or gzip-compressed spec (detected by magic bytes), size-capped."""
    data = read_capped(path, max_bytes, f"spec {path}", SpecError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec {path} is not UTF-8 text (byte {e.start})") from None


def parse_query(text: str, source: str = "", max_terms: int = MAX_TERMS,
                compose: bool = False) -> Query:
    """Parse VNN-LIB 1.0 or 2.0 text into a normalised Spec and its declarations.

    ``compose``: also accept what only a rewritten model verifies (hidden tensors, several
    networks or tensors, constraints over several inputs or mixing inputs and outputs,
    products); the Spec is then over the flat layout ``Query.layout`` (``verifier.compose``).
    """
    try:
        p = Parser(text, source, max_terms, compose).parse()
        info = p.decls.info()
        spec, layout = build_spec(p, info.version)
        return Query(spec, info, layout)
    except RecursionError:
        raise SpecError(f"{source or '<spec>'}: spec nested too deeply") from None


def parse_vnnlib(text: str, source: str = "", max_terms: int = MAX_TERMS) -> Spec:
    """Parse VNN-LIB 1.0 or 2.0 text into a normalised :class:`Spec` (SpecError if invalid)."""
    return parse_query(text, source, max_terms).spec


def load_query(path: str | Path, max_bytes: int = MAX_BYTES,
               max_terms: int = MAX_TERMS, compose: bool = False) -> Query:
    """Read (plain or .gz) and parse a spec file; see :func:`parse_query`."""
    return parse_query(read_text(path, max_bytes), str(path), max_terms, compose)


def load_spec(path: str | Path, max_bytes: int = MAX_BYTES, max_terms: int = MAX_TERMS) -> Spec:
    """Read (plain or .gz) and parse a spec file into a :class:`Spec`."""
    return load_query(path, max_bytes, max_terms).spec


def load_query_info(path: str | Path, max_bytes: int = MAX_BYTES) -> QueryInfo:
    """Only the declarations (version, networks, tensors) of a spec file.

    Accepts queries that :func:`load_spec` refuses (several networks, hidden tensors).
    """
    text = read_text(path, max_bytes)
    p = Parser(text, str(path))
    p.declarations_only = True
    p.parse()
    return p.decls.info()
