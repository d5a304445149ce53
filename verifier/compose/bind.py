"""Bind the tensors a VNN-LIB 2.0 network declares to the tensors of its ONNX model.

The standard's rules (VNN-LIB 2.0, "Multiple input and output declarations"): declared inputs
and outputs map to the ONNX graph's inputs and outputs in order, unless every one of them names
its ONNX tensor, in which case they map by name; a hidden tensor always names the ONNX value
(the output of some node). Declared sizes must match the model's, and a declared ONNX element
type must be the model's (``real`` accepts any floating type). Every mismatch is a SpecError
naming the tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import onnx

from verifier.errors import SpecError
from verifier.spec.query import NetworkDecl, QueryInfo, TensorDecl

M = TypeVar("M")  # a model: a path, bytes or an onnx.ModelProto

# Declared element types nncert analyses soundly (as ``supports --onnx-element-types`` says).
SUPPORTED_TYPES = ("float32", "real")
_FLOAT_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64"}


@dataclass(frozen=True)
class InputBinding:
    """A declared input and the ONNX graph input it feeds."""

    decl: TensorDecl
    onnx_name: str
    shape: tuple[int, ...]  # the ONNX input's static shape (a symbolic batch axis is 1)
    elem_type: int


@dataclass(frozen=True, eq=False)
class NetworkBinding:
    """One declared network bound to its ONNX model."""

    decl: NetworkDecl
    model: onnx.ModelProto
    inputs: tuple[InputBinding, ...]
    values: tuple[tuple[TensorDecl, str], ...]  # hidden and outputs, declaration order
    input_offset: int  # first declared input element of this network in the flat numbering


def static_dims(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = []
    for axis, d in enumerate(vi.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif axis == 0:
            dims.append(1)
        else:
            raise SpecError(f"ONNX input {vi.name!r} has a symbolic axis {axis}; only the batch "
                            "axis may be symbolic")
    return tuple(dims)


def _by_name_or_order(net: str, kind: str, decls, onnx_names: list[str]) -> list[str]:
    named = [d.onnx_name is not None for d in decls]
    if all(named):
        missing = [d.onnx_name for d in decls if d.onnx_name not in onnx_names]
        if missing:
            raise SpecError(f"network {net}: ONNX {kind} {missing[0]!r} is not a graph {kind} "
                            f"of the model (its {kind}s: {', '.join(onnx_names)})")
        return [d.onnx_name for d in decls]
    if any(named):
        raise SpecError(f"network {net}: either every declared {kind} names its ONNX tensor "
                        "or none does (VNN-LIB 2.0 maps them by name or by order)")
    if len(decls) != len(onnx_names):
        raise SpecError(f"network {net} declares {len(decls)} {kind}(s), the model has "
                        f"{len(onnx_names)} ({', '.join(onnx_names)})")
    return list(onnx_names)


def check_type(net: str, decl: TensorDecl, elem_type: int | None) -> None:
    """SpecError unless the declared element type is analysed and matches the model's."""
    declared = decl.dtype.lower()
    if declared not in SUPPORTED_TYPES:
        raise SpecError(f"network {net}: {decl.name} has element type {decl.dtype}; supported: "
                        f"{', '.join(SUPPORTED_TYPES)}")
    actual = _FLOAT_TYPES.get(elem_type) if elem_type is not None else "float32"
    if actual is None:
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise SpecError(f"network {net}: {decl.name} is a {name} tensor in the model; only "
                        "floating-point tensors can be declared")
    if declared != "real" and actual != declared:
        raise SpecError(f"network {net}: {decl.name} is declared {decl.dtype} but the model's "
                        f"tensor is {actual} (declare it real to accept any floating type)")


def _bind_inputs(net: NetworkDecl, graph: onnx.GraphProto) -> tuple[InputBinding, ...]:
    constants = {t.name for t in graph.initializer}
    vis = {vi.name: vi for vi in graph.input if vi.name not in constants}
    names = _by_name_or_order(net.name, "input", net.inputs, list(vis))
    unbound = [n for n in vis if n not in names]
    if unbound:
        raise SpecError(f"network {net.name}: ONNX input {unbound[0]!r} is not declared")
    out = []
    for decl, name in zip(net.inputs, names, strict=True):
        vi = vis[name]
        shape = static_dims(vi)
        if math.prod(shape) != decl.size:
            raise SpecError(f"network {net.name}: input {decl.name} has {decl.size} elements, "
                            f"the ONNX input {name!r} {math.prod(shape)} (shape {list(shape)})")
        check_type(net.name, decl, vi.type.tensor_type.elem_type)
        out.append(InputBinding(decl, name, shape, vi.type.tensor_type.elem_type))
    return tuple(out)


def _bind_values(net: NetworkDecl, graph: onnx.GraphProto) -> tuple[tuple[TensorDecl, str], ...]:
    outputs = _by_name_or_order(net.name, "output", net.outputs,
                                [vi.name for vi in graph.output])
    by_decl = dict(zip((d.name for d in net.outputs), outputs, strict=True))
    produced = {o for node in graph.node for o in node.output if o}
    values = []
    for decl in net.values:
        if decl.kind == "hidden":
            if decl.onnx_name is None:
                raise SpecError(f"network {net.name}: hidden tensor {decl.name} needs the name "
                                "of its ONNX value (declare-hidden NAME TYPE [SHAPE] \"onnx\")")
            if decl.onnx_name not in produced:
                raise SpecError(f"network {net.name}: hidden tensor {decl.name}: no node of the "
                                f"model computes a value named {decl.onnx_name!r}")
            values.append((decl, decl.onnx_name))
        else:
            values.append((decl, by_decl[decl.name]))
    return tuple(values)


def bind_network(net: NetworkDecl, model: onnx.ModelProto, input_offset: int) -> NetworkBinding:
    """Bind one declared network to its parsed ONNX model (SpecError on a mismatch)."""
    return NetworkBinding(net, model, _bind_inputs(net, model.graph),
                          _bind_values(net, model.graph), input_offset)


def v1_network(model: onnx.ModelProto, n_in: int, n_out: int,
               output_shapes: list[tuple[int, ...]]) -> NetworkDecl:
    """The network a VNN-LIB 1.0 spec implies: every ONNX input and output in order (shapes
    of the outputs as onnxruntime computes them), X_i / Y_j numbering their concatenation."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    ins = [TensorDecl(f"X{i}", "real", static_dims(vi), "input")
           for i, vi in enumerate(v for v in graph.input if v.name not in constants)]
    outs = [TensorDecl(f"Y{j}", "real", tuple(s), "output")
            for j, s in enumerate(output_shapes)]
    for label, decls, n in (("input", ins, n_in), ("output", outs, n_out)):
        total = sum(t.size for t in decls)
        if total != n:
            raise SpecError(f"spec declares {n} {label} variables, the model has {total}")
    return NetworkDecl("model", tuple(ins), tuple(outs), (), (), (*ins, *outs))


def one_model_per_network(info: QueryInfo, model: M) -> dict[str, M]:
    """Network name -> ``model`` for a query verified with one model (the positional
    ``nncert verify MODEL QUERY`` form, a service job).

    One model stands for a 2.0 query's networks only when exactly one of them is not declared
    ``equal-to`` another and every other one is, directly or through others, equal-to that
    one; otherwise SpecError naming the networks. A VNN-LIB 1.0 query names no network: its
    one model is keyed ``""``.
    """
    if info.version != "2.0":
        return {"": model}
    declared = {n.name for n in info.networks}
    equal = {n.name: other for n in info.networks
             for rel, other in n.equivalences if rel == "equal-to"}
    roots = [n.name for n in info.networks if n.name not in equal]
    if len(roots) != 1:
        raise SpecError(f"the query declares {len(roots)} networks that are not equal-to "
                        f"another ({', '.join(roots) or 'none'}), but one model was given; "
                        "a query over several networks needs one model for each")
    for name in equal:
        seen, source = set(), name
        while source in equal:
            if source in seen or equal[source] not in declared:
                raise SpecError(f"network {name} is equal-to {equal[source]!r}, which is not "
                                "a declared network with a model")
            seen.add(source)
            source = equal[source]
    return {n.name: model for n in info.networks}
