"""Load an ONNX file into the graph IR: validate, convert node by node, simplify."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bounds.graph import Graph, TensorInfo
from verifier.errors import ModelError, UnsupportedOpError
from verifier.onnx_import.context import ConvertContext, Dyn
from verifier.onnx_import.fold import fold_node
from verifier.onnx_import.registry import find_converter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedModel:
    """The IR graph plus what is needed to run the original model in onnxruntime."""

    graph: Graph
    onnx_bytes: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    onnx_input_shapes: tuple[tuple[int, ...], ...]  # symbolic dims set to 1
    path: str = ""


def read_model_proto(path: str | Path) -> tuple[onnx.ModelProto, bytes]:
    """Read and parse an ONNX file, refusing external data. Raises ModelError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {str(path)!r}: {exc.strerror or exc}") from None
    return parse_model_bytes(data, str(path)), data


def parse_model_bytes(data: bytes, label: str = "<upload>") -> onnx.ModelProto:
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{label} is not a valid ONNX protobuf ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{label} is not a valid ONNX model (empty graph)")
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(
                f"{label}: tensor {tensor.name!r} refers to external data, which is not accepted"
            )
    return model


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t


def opset_of(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _static_shape(value_info: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)  # symbolic batch dimension: one sample at a time
        else:
            raise ModelError(
                f"input {value_info.name!r} has a symbolic dimension {d.dim_param!r} at axis {i};"
                " only the batch axis may be symbolic"
            )
    return tuple(shape)


def load_model(path: str | Path, simplify: bool = True) -> ImportedModel:
    proto, data = read_model_proto(path)
    return import_proto(proto, data, str(path), simplify=simplify)


def import_proto(
    proto: onnx.ModelProto, data: bytes, label: str = "", simplify: bool = True
) -> ImportedModel:
    opset = opset_of(proto)
    for entry in proto.opset_import:
        if entry.domain not in ("", "ai.onnx"):
            used = {n.domain for n in proto.graph.node}
            if entry.domain in used:
                raise ModelError(f"custom operator domain {entry.domain!r} is not supported")
    ctx = ConvertContext(opset)
    initializers = {t.name for t in proto.graph.initializer}
    for t in proto.graph.initializer:
        ctx.bind(t.name, numpy_helper.to_array(t).copy())
    inputs = []
    for vi in proto.graph.input:
        if vi.name in initializers:
            continue
        shape = _static_shape(vi)
        ctx.bind(vi.name, Dyn(vi.name, shape))
        inputs.append(TensorInfo(vi.name, shape, onnx_name=vi.name))
    if not inputs:
        raise ModelError(f"{label or 'model'} has no non-constant input")
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ModelError(f"node {node.name!r} uses custom domain {node.domain!r}")
        convert = find_converter(node.op_type, opset, node.name or node.op_type)
        try:
            if _all_constant(ctx, node):
                fold_node(ctx, node)
            else:
                convert(ctx, node)
        except (ModelError, UnsupportedOpError):
            raise
        except Exception as exc:
            raise ModelError(
                f"cannot convert {node.op_type} node {node.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    outputs = []
    for vi in proto.graph.output:
        value = ctx.value(vi.name)
        if not isinstance(value, Dyn):
            raise ModelError(f"output {vi.name!r} does not depend on the input")
        outputs.append(TensorInfo(value.name, value.shape, onnx_name=vi.name))
    graph = Graph(tuple(inputs), tuple(outputs), tuple(ctx.nodes), opset=opset)
    if simplify:
        from verifier.ir.passes import simplify_graph

        graph = simplify_graph(graph)
    return ImportedModel(
        graph=graph,
        onnx_bytes=data,
        input_names=tuple(t.onnx_name for t in inputs),
        output_names=tuple(t.onnx_name for t in outputs),
        onnx_input_shapes=tuple(t.shape for t in inputs),
        path=label,
    )


def _all_constant(ctx: ConvertContext, node) -> bool:
    """True when every present input is a constant (and there is at least one input)."""
    present = [name for name in node.input if name]
    return bool(present) and all(not isinstance(ctx.value(n), Dyn) for n in present)


def as_float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)
