"""What a VNN-LIB 2.0 query declares: networks and their typed tensors (for the CLI).

VNN-LIB 1.0 files declare no network; their :class:`QueryInfo` has ``version == "1.0"`` and no
networks (the single input is ``X_0..X_{n-1}``, the single output ``Y_0..Y_{m-1}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from verifier.spec.layout import Layout
from verifier.spec.types import Spec


@dataclass(frozen=True)
class TensorDecl:
    """One ``declare-input`` / ``declare-hidden`` / ``declare-output`` of a 2.0 network."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str  # "input" | "hidden" | "output"
    onnx_name: str | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class NetworkDecl:
    """A ``declare-network``: its name, tensors, and ``isomorphic-to``/``equal-to`` claims."""

    name: str
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    hidden: tuple[TensorDecl, ...] = ()
    equivalences: tuple[tuple[str, str], ...] = ()  # (relation, other network name)
    tensors: tuple[TensorDecl, ...] = ()  # every tensor, in declaration order

    @property
    def values(self) -> tuple[TensorDecl, ...]:
        """Hidden and output tensors in declaration order (their order in the flat layout)."""
        order = self.tensors or (*self.hidden, *self.outputs)
        return tuple(t for t in order if t.kind != "input")


@dataclass(frozen=True)
class QueryInfo:
    """The declarations of a query: its VNN-LIB version and (2.0) the networks it names."""

    version: str
    networks: tuple[NetworkDecl, ...] = ()

    def network(self, name: str) -> NetworkDecl | None:
        return next((n for n in self.networks if n.name == name), None)


@dataclass(frozen=True, eq=False)
class Query:
    """A parsed query: the normalised :class:`Spec` and the declarations it came from."""

    spec: Spec
    info: QueryInfo
    layout: Layout | None = None  # flat positions of the declared variables (spec.layout)

    @property
    def needs_composition(self) -> bool:
        """True unless the query is one network with one input and one output tensor, no
        hidden tensor, and constraints the plain pipeline takes (boxes, linear constraints
        over outputs): then it must be verified on a composed model (verifier.compose)."""
        if self.layout is not None and not self.layout.trivial:
            return True
        nets = self.info.networks
        if self.info.version != "2.0":
            return False
        return (len(nets) != 1 or len(nets[0].inputs) != 1 or len(nets[0].outputs) != 1
                or bool(nets[0].hidden))
