"""State shared by converters while one ONNX graph is imported."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from bounds.graph import Node, Shape
from verifier.errors import ModelError, UnsupportedOpError


def tensor_array(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    """The array of a tensor in the model; ModelError (naming it) when its data type is
    unknown, a dimension is negative, or its data does not fill its dims (onnx raises
    ValueError or KeyError there, which would surface as an internal error)."""
    if any(d < 0 for d in tensor.dims):
        raise ModelError(f"{what} {tensor.name!r} has a negative dimension {list(tensor.dims)}")
    try:
        return numpy_helper.to_array(tensor)
    except KeyError:
        raise ModelError(f"{what} {tensor.name!r} has an unknown data type "
                         f"{tensor.data_type}") from None
    except (ValueError, TypeError) as exc:
        count = math.prod(int(d) for d in tensor.dims)
        raise ModelError(f"{what} {tensor.name!r} cannot be read: its dims {list(tensor.dims)} "
                         f"({count} elements) do not match its data ({exc})") from None


class DynamicOperandError(ModelError):
    """An operand that must be constant (a shape, weights, indices...) depends on the input.
    The converter registry re-raises it as an UnsupportedOpError naming the op and node: the
    model may be valid, we just cannot import this use of the op."""


def unsupported(node: onnx.NodeProto, reason: str) -> UnsupportedOpError:
    """The error for a use of ``node``'s op that the importer does not handle."""
    return UnsupportedOpError(node.op_type, node.name, reason=reason)


@dataclass(frozen=True)
class Dyn:
    """A dynamic (input-dependent) value: the IR value name and its static per-sample shape."""

    name: str
    shape: Shape

    @property
    def rank(self) -> int:
        return len(self.shape)


Value = Dyn | np.ndarray


@dataclass(frozen=True)
class Sequence:
    """An ONNX sequence, known item by item at import (``converters/sequence.py``)."""

    items: tuple


@dataclass(frozen=True)
class Unavailable:
    """An output the importer does not compute (TopK's indices): reading it raises
    ``error``, so a model that never reads it imports."""

    error: Exception


class ConvertContext:
    """Maps ONNX value names to constants or IR values, and collects emitted IR nodes."""

    def __init__(self, opset: int, ml_opset: int = 1):
        self.opset = opset
        self.ml_opset = ml_opset  # of the ai.onnx.ml operators (converters/ml.py)
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self._counter = 0
        self.fold_budget: int | None = None  # elements per folded tensor (``fold.fold_budget``)

    # -- reading ---------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name != "" and name in self.values

    def value(self, name: str) -> Value:
        if name not in self.values:
            raise ModelError(f"value {name!r} is used before it is defined")
        value = self.values[name]
        if isinstance(value, Unavailable):
            raise value.error
        return value

    def const(self, name: str, what: str = "") -> np.ndarray:
        """An input that must be constant (shape tensors, weights given as initializers...)."""
        v = self.value(name)
        if isinstance(v, Dyn):
            what = what or f"operand {name!r}"
            raise DynamicOperandError(f"{what} must be a constant, but depends on the input")
        return v

    def optional(self, node: onnx.NodeProto, pos: int):
        """Input ``pos`` of ``node`` (constant or dynamic), or None when it is absent."""
        if len(node.input) <= pos or node.input[pos] == "":
            return None
        return self.value(node.input[pos])

    def optional_const(self, node: onnx.NodeProto, pos: int, default=None):
        if len(node.input) <= pos or node.input[pos] == "":
            return default
        return self.const(node.input[pos], f"input {pos} of {node.op_type} node {node.name!r}")

    @staticmethod
    def attr(node: onnx.NodeProto, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                value = onnx.helper.get_attribute_value(a)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, onnx.TensorProto):
                    return tensor_array(value, f"attribute {name!r} of {node.op_type} node")
                return value
        return default

    # -- writing ---------------------------------------------------------------------------
    def bind(self, onnx_name: str, value: Value) -> None:
        if isinstance(value, (np.ndarray, Dyn, Sequence, Unavailable)):
            self.values[onnx_name] = value
        else:
            self.values[onnx_name] = np.asarray(value)

    def emit(
        self,
        op: str,
        inputs: list[Value | None],
        shape: Shape,
        attrs: dict | None = None,
        hint: str = "",
    ) -> Dyn:
        """Append an IR node. Constant inputs (numpy arrays) are stored inline in the node."""
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # absent optional inputs (e.g. no bias)
            inputs.pop()
        onnx_shape = tuple(int(d) for d in shape)
        if onnx_shape == () and _liftable(op, inputs):
            shape = (1,)
            if op == "Gather":
                inputs[1] = np.reshape(inputs[1], (1,))
        names: list[str | None] = []
        consts: dict[int, np.ndarray] = {}
        for pos, v in enumerate(inputs):
            if isinstance(v, Dyn):
                names.append(v.name)
            else:
                names.append(None)
                if v is not None:
                    consts[pos] = np.asarray(v)
        self._counter += 1
        name = f"{hint or op.lower()}_{self._counter}"
        self.nodes.append(Node(name, op, tuple(names), tuple(shape), attrs or {}, consts))
        return Dyn(name, onnx_shape)

    # -- reading the emitted IR -------------------------------------------------------------
    def element_origins(self, value: Value) -> list[tuple[str | None, int, float]]:
        """For each element of ``value`` (row-major): (v, i, c) with element = v[i] + c for an
        IR value v (flat index i), or (None, 0, c) where the element is the constant c. Found
        by walking back through Reshape (same elements, same order), Expand (the element it
        repeats), Concat (the part holding the element) and Add/Sub of a constant where the
        dynamic operand is not broadcast; the walk stops at anything else (c = 0 there)."""
        if not isinstance(value, Dyn):
            return [(None, 0, float(v)) for v in np.ravel(value)]
        producers = {n.name: n for n in self.nodes}
        shapes = {v.name: v.shape for v in self.values.values() if isinstance(v, Dyn)}
        shapes.update((n.name, tuple(n.shape)) for n in self.nodes)
        return [_origin(producers, shapes, value.name, i) for i in range(math.prod(value.shape))]


# Ops whose rule gives a one-element output the shape of its one-element inputs (or of
# node.shape): an ONNX scalar they compute is held in the IR as shape (1,), since the engines
# index every value along one axis at least. The Dyn keeps ONNX's shape () for the converters.
_LIFT_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Min", "Max", "Pow", "Equal", "Greater",
                       "GreaterOrEqual", "And", "Or", "Select", "Where", "Reshape", "Cast"})


def _liftable(op: str, inputs: list) -> bool:
    """True when an op of ONNX output shape () can be held as shape (1,): its dynamic inputs
    hold one element each and its rule keeps that shape (elementwise ops, broadcasting ops,
    Reshape), or it is a Gather of one element of a vector at a scalar constant index (the
    index becomes [i])."""
    from bounds.registry import rules

    if op == "Gather":
        return (len(inputs) == 2 and isinstance(inputs[0], Dyn) and inputs[0].rank == 1
                and not isinstance(inputs[1], Dyn) and np.ndim(inputs[1]) == 0)
    known = rules()
    if op not in _LIFT_OPS and not (op in known and known.get(op).traits.elementwise):
        return False
    return all(math.prod(v.shape) == 1 for v in inputs if isinstance(v, Dyn))


def _origin(producers: dict, shapes: dict, name: str, i: int) -> tuple[str | None, int, float]:
    """One element's origin (``ConvertContext.element_origins``)."""
    offset = 0.0
    while (node := producers.get(name)) is not None:
        if node.op == "Reshape":
            name = node.inputs[0]
            continue
        if node.op == "Expand" and node.inputs[0] is not None:  # input of the output's rank
            coord = np.unravel_index(i, node.shape)
            src = shapes[node.inputs[0]]
            i = int(np.ravel_multi_index([c if d > 1 else 0 for c, d in zip(coord, src,
                                                                          strict=True)], src))
            name = node.inputs[0]
            continue
        if node.op == "Concat":
            axis = int(node.attrs["axis"])
            coord = [int(c) for c in np.unravel_index(i, node.shape)]
            for pos, part in enumerate(node.inputs):
                part_shape = shapes[part] if part is not None else np.shape(node.consts[pos])
                if coord[axis] < part_shape[axis]:
                    break
                coord[axis] -= part_shape[axis]
            j = int(np.ravel_multi_index(coord, part_shape))
            if part is None:
                return None, 0, offset + float(np.ravel(node.consts[pos])[j])
            name, i = part, j
            continue
        dyn = [k for k, n in enumerate(node.inputs) if n is not None]
        if node.op not in ("Add", "Sub") or len(dyn) != 1 or len(node.inputs) != 2:
            break
        pos = dyn[0]
        if shapes.get(node.inputs[pos]) != tuple(node.shape) or (node.op, pos) == ("Sub", 1):
            break
        c = float(np.broadcast_to(node.consts[1 - pos], node.shape).ravel()[i])
        offset += c if node.op == "Add" else -c
        name = node.inputs[pos]
    return name, i, offset


def shape_of(value: Value) -> Shape:
    """Static per-sample shape of a dynamic value, or the shape of a constant."""
    return value.shape if isinstance(value, Dyn) else tuple(np.shape(value))


def is_dyn(value) -> bool:
    return isinstance(value, Dyn)


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ModelError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank if rank else 0
