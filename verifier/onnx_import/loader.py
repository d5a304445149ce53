"""Load an ONNX file into the graph IR: validate, convert node by node, simplify."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx

from bounds.graph import Graph, TensorInfo
from verifier.errors import ConstantOutputError, ModelError, UnsupportedOpError
from verifier.gz import read_capped
from verifier.onnx_import.context import ConvertContext, Dyn, tensor_array
from verifier.onnx_import.fold import fold_budget, fold_node
from verifier.onnx_import.registry import ML_DOMAIN, MS_DOMAIN, find_converter, ml_op

log = logging.getLogger(__name__)

# The operator domains imported: the standard one and scikit-learn's (converters/ml.py).
_DOMAINS = ("", "ai.onnx", ML_DOMAIN, MS_DOMAIN)


@dataclass(frozen=True)
class ImportedModel:
    """The IR graph plus what is needed to run the original model in onnxruntime."""

    graph: Graph
    onnx_bytes: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    onnx_input_shapes: tuple[tuple[int, ...], ...]  # symbolic dims set to 1
    path: str = ""
    # ONNX value name -> IR value of the same tensor, for the values that survive
    # simplification unchanged (the differential check locates a divergence with it).
    value_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# Protobuf's own limit on a message: a larger (decompressed) model cannot be parsed anyway.
MAX_MODEL_BYTES = 2**31 - 1


def read_model_proto(path: str | Path) -> tuple[onnx.ModelProto, bytes]:
    """Read (plain or gzip-compressed, as VNN-COMP ships ``.onnx.gz``) and parse an ONNX
    file. Tensors kept as external data (torch.onnx.export's default since its dynamo
    exporter: ``model.onnx.data`` beside the model) are read from files in the model's own
    directory and embedded, so the bytes returned hold the whole model (onnxruntime sessions
    are built from them). Raises ModelError."""
    data = read_capped(path, MAX_MODEL_BYTES, f"model {str(path)!r}", ModelError)
    model = parse_model_bytes(data, str(path), external_data=True)
    if embed_external_data(model, Path(path).parent, str(path), len(data)):
        data = model.SerializeToString()
    return model, data


def parse_model_bytes(data: bytes, label: str = "<upload>",
                      external_data: bool = False) -> onnx.ModelProto:
    """The parsed model; ModelError when ``data`` is no valid ONNX model, or (unless
    ``external_data``: the caller embeds it) when a tensor refers to external data."""
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{label} is not a valid ONNX protobuf ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{label} is not a valid ONNX model (empty graph)")
    if model.ir_version > onnx.IR_VERSION:  # onnxruntime refuses it too, deep in a stage
        raise ModelError(f"{label} has ONNX IR version {model.ir_version}; the newest "
                         f"supported is {onnx.IR_VERSION}")
    if not external_data:
        for tensor in _graph_tensors(model.graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise ModelError(
                    f"{label}: tensor {tensor.name!r} refers to external data, which is not "
                    "accepted here: save the model with its weights inside (onnx.save(model, "
                    "path, save_as_external_data=False), or torch.onnx.export(..., "
                    "external_data=False))")
    return model


def embed_external_data(model: onnx.ModelProto, folder: Path, label: str,
                        model_bytes: int) -> bool:
    """Read every external-data tensor of ``model`` (subgraphs and sparse initializers too)
    from its file and hold it inline; True when there was one. A location must be a
    relative path to a regular file inside ``folder`` (no absolute path, no '..', no link
    out of it), its offset and length within the file and its length that of the tensor's
    elements; the whole model stays under protobuf's limit. Raises ModelError."""
    external = [t for t in _graph_tensors(model.graph)
                if t.data_location == onnx.TensorProto.EXTERNAL]
    total = model_bytes
    for tensor in external:
        raw = _external_bytes(tensor, folder, label)
        total += len(raw)
        if total > MAX_MODEL_BYTES:
            raise ModelError(f"{label}: the model with its external data is larger than "
                             f"{MAX_MODEL_BYTES} bytes (protobuf's limit)")
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return bool(external)


def _external_bytes(tensor: onnx.TensorProto, folder: Path, label: str) -> bytes:
    info = {e.key: e.value for e in tensor.external_data}
    what = f"{label}: external data of tensor {tensor.name!r}"
    location = info.get("location", "")
    parts = Path(location.replace("\\", "/")).parts
    if not location or Path(location).is_absolute() or ".." in parts or ":" in location:
        raise ModelError(f"{what}: location {location!r} is not a relative path inside the "
                         "model's folder")
    root = folder.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise ModelError(f"{what}: {location!r} is not a file in the model's folder "
                         f"{str(folder)!r}")
    try:
        offset = int(info.get("offset", 0))
        size = target.stat().st_size
        length = int(info["length"]) if "length" in info else size - offset
    except (ValueError, OSError) as exc:
        raise ModelError(f"{what}: bad offset or length ({exc})") from None
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize \
        if tensor.data_type not in (0, onnx.TensorProto.STRING) else None
    if itemsize is None:
        raise ModelError(f"{what}: data type {tensor.data_type} cannot be held externally")
    expected = math.prod(int(d) for d in tensor.dims) * itemsize
    if offset < 0 or length != expected or offset + length > size:
        raise ModelError(f"{what}: {length} bytes at offset {offset} of a {size}-byte file "
                         f"({expected} bytes expected)")
    with open(target, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _graph_tensors(graph: onnx.GraphProto):
    """Every tensor a graph holds: initializers (sparse ones too), tensor attributes, and
    those of its subgraphs (If, Loop, Scan bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for a in node.attribute:
            yield from ([a.t] if a.HasField("t") else [])
            yield from a.tensors
        for sub in _subgraphs(node):
            yield from _graph_tensors(sub)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs ``node``'s attributes hold (If's branches, Loop and Scan bodies)."""
    return [g for a in node.attribute for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]


def opset_of(model: onnx.ModelProto, domain: str = "") -> int:
    """The opset ``model`` imports for ``domain`` ("": the standard operators); 1 if none."""
    for entry in model.opset_import:
        if entry.domain == domain or (domain == "" and entry.domain == "ai.onnx"):
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
                f"input {value_info.name!r} has a symbolic dimension {d.dim_param!r} at axis"
                f" {i}; only the batch axis may be symbolic (nncert verify fixes one other from"
                " the spec's input count)"
            )
    return tuple(shape)


def load_model(path: str | Path, simplify: bool = True) -> ImportedModel:
    proto, data = read_model_proto(path)
    return import_proto(proto, data, str(path), simplify=simplify)


def import_proto(
    proto: onnx.ModelProto, data: bytes, label: str = "", simplify: bool = True,
    half_precision: bool = False,
) -> ImportedModel:
    """The IR of ``proto``. Half-precision computation is refused unless ``half_precision``
    (the equivalence gate's choice: it warns, and its model check refuses such models)."""
    opset = opset_of(proto)
    for entry in proto.opset_import:
        if entry.domain not in _DOMAINS:
            used = {n.domain for n in all_nodes(proto.graph.node)}
            if entry.domain in used:
                raise ModelError(f"custom operator domain {entry.domain!r} is not supported"
                                 + _DOMAIN_HINTS.get(entry.domain, ""))
    if not half_precision:
        _refuse_half_precision(proto)
    ctx = ConvertContext(opset, ml_opset=opset_of(proto, ML_DOMAIN))
    initializers = {t.name for t in proto.graph.initializer}
    for t in proto.graph.initializer:
        ctx.bind(t.name, tensor_array(t, "initializer").copy())
    ctx.fold_budget = fold_budget(ctx.values[name] for name in initializers)
    inputs = []
    for vi in proto.graph.input:
        if vi.name in initializers:
            continue
        shape = _static_shape(vi)
        ctx.bind(vi.name, Dyn(vi.name, shape))
        inputs.append(TensorInfo(vi.name, shape, onnx_name=vi.name))
    if not inputs:
        raise ModelError(f"{label or 'model'} has no non-constant input")
    convert_nodes(ctx, proto.graph.node)
    constant = [vi.name for vi in proto.graph.output if not isinstance(ctx.value(vi.name), Dyn)]
    if constant:
        error = ConstantOutputError if len(constant) == len(proto.graph.output) else ModelError
        raise error(f"output {constant[0]!r} does not depend on the input")
    outputs = []
    for vi in proto.graph.output:
        value = ctx.value(vi.name)
        if value.shape == ():  # engines index an output's values along one axis at least
            value = ctx.emit("Reshape", [value], (1,))
        outputs.append(TensorInfo(value.name, value.shape, onnx_name=vi.name))
    graph = Graph(tuple(inputs), tuple(outputs), tuple(ctx.nodes), opset=opset)
    raw = graph
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
        value_names=MappingProxyType(surviving_value_names(ctx.values, raw, graph)),
    )


_DOMAIN_HINTS = {
    "com.microsoft.nchwc": " (onnxruntime's blocked-layout ops, written when a model is saved "
                           "at optimization level ORT_ENABLE_ALL for this machine's CPU; save "
                           "it at ORT_ENABLE_EXTENDED or below)"}


def convert_nodes(ctx: ConvertContext, nodes) -> None:
    """Convert ``nodes`` in order (a graph's, or an inlined If branch's), folding those whose
    inputs are all constant."""
    for node in nodes:
        if node.domain not in _DOMAINS:
            raise ModelError(f"node {node.name!r} uses custom domain {node.domain!r}")
        try:
            if _foldable(ctx, node):  # (any standard op: shape arithmetic needs no converter)
                fold_node(ctx, node)
            elif node.domain == ML_DOMAIN:
                find_converter(ml_op(node.op_type), ctx.ml_opset,
                               node.name or node.op_type)(ctx, node)
            elif node.domain == MS_DOMAIN:
                find_converter(f"{MS_DOMAIN}.{node.op_type}", 1,
                               node.name or node.op_type)(ctx, node)
            else:
                find_converter(node.op_type, ctx.opset, node.name or node.op_type)(ctx, node)
        except (ModelError, UnsupportedOpError):
            raise
        except Exception as exc:
            raise ModelError(
                f"cannot convert {node.op_type} node {node.name!r}: {type(exc).__name__}: {exc}"
            ) from exc


# Ops whose output is drawn at random each run: a folded sample would not be the model.
_RANDOM = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Multinomial", "Bernoulli"})


def _foldable(ctx: ConvertContext, node: onnx.NodeProto) -> bool:
    # (If, Loop, Scan bodies read outer values that their inputs do not list)
    return (_all_constant(ctx, node) and not _subgraphs(node)
            and node.op_type not in _RANDOM)


def all_nodes(nodes):
    """``nodes`` and, depth first, the nodes of their subgraphs."""
    for node in nodes:
        yield node
        for sub in _subgraphs(node):
            yield from all_nodes(sub.node)


_HALF = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}
# Ops that move or select elements of a value without computing: a half-precision value stays
# exact through them.
_MOVES = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
                    "Gather", "Slice", "Concat", "Split", "Expand", "Tile", "Dropout"})


def _refuse_half_precision(proto: onnx.ModelProto) -> None:
    """UnsupportedOpError where the model computes in float16 or bfloat16 (an input of that
    type, or a node other than Cast and pure data movement reading such a value): the rounding
    model covers float32 and float64 arithmetic (2**-24 relative per operation); half
    precision rounds at 2**-11 or 2**-8, and the engines' bounds would not hold it. A Cast to
    half precision and back is modelled (a rounding node), and so are half weights cast to
    float."""
    half: dict[str, str] = {}
    for vi in proto.graph.input:
        kind = _HALF.get(vi.type.tensor_type.elem_type)
        if kind:
            raise UnsupportedOpError("input", vi.name, reason=f"a {kind} input (the rounding "
                                     "model covers float32 and float64 computation)")
    for t in proto.graph.initializer:
        if t.data_type in _HALF:
            half[t.name] = _HALF[t.data_type]
    for node in all_nodes(proto.graph.node):
        read = [half[n] for n in node.input if n in half]
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to in _HALF:
                half[node.output[0]] = _HALF[to]
        elif node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type in _HALF:
                half[node.output[0]] = _HALF[value.data_type]
        elif read and node.op_type in _MOVES:
            half.update(dict.fromkeys(node.output, read[0]))
        elif read and node.op_type not in ("Shape", "Size"):
            raise UnsupportedOpError(node.op_type, node.name, reason=f"it computes in "
                                     f"{read[0]} (the rounding model covers float32 and "
                                     "float64 computation)")


def surviving_value_names(values: dict, raw: Graph, graph: Graph) -> dict[str, str]:
    """ONNX name -> IR value name, for each dynamic ONNX value whose IR node is still in
    ``graph`` computing what it computed in ``raw``.

    The passes keep a node's name when they rewrite it (a Linear that absorbed the following
    Add now computes the Add's value), so a name alone is not enough: a node counts as the same
    value only with the same op, attributes and constant arrays. Its inputs may have been
    renamed; the passes rename a value only to one that computes the same tensor.
    """
    before = {n.name: n for n in raw.nodes}
    kept = {t.name for t in graph.inputs}
    kept.update(n.name for n in graph.nodes if _unchanged(before.get(n.name), n))
    return {onnx_name: v.name for onnx_name, v in values.items()
            if isinstance(v, Dyn) and v.name in kept}


def _unchanged(old, new) -> bool:
    return (old is not None and old.op == new.op and old.attrs.keys() == new.attrs.keys()
            and all(_same(old.attrs[k], new.attrs[k]) for k in old.attrs)
            and old.consts.keys() == new.consts.keys()
            and all(old.consts[k] is new.consts[k] for k in old.consts))


def _same(a, b) -> bool:
    """Attribute equality that also works for array-valued attributes."""
    return a is b or bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))


def _all_constant(ctx: ConvertContext, node) -> bool:
    """True when every present input is a constant tensor (and there is at least one input;
    a sequence is not one: ``converters/sequence.py``)."""
    present = [name for name in node.input if name]
    return bool(present) and all(isinstance(ctx.value(n), np.ndarray) for n in present)


def as_float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)
