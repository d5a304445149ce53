"""Checks applied to uploads before they are accepted: size caps, model import, spec parse.

A model is accepted only when it parses, has no external data or custom domains, stays under
the node/parameter/opset caps and converts to the IR with its constants (initializers and
folded values, counted with exact integers) under the parameter cap. A spec is accepted only
when it parses under the size and term caps (gzip decompressed with a bounded output), its
input boxes stay under ``max_spec_values`` once its 'or's are multiplied out (counted before
they are built), it has a non-empty input box, and it matches the model's input and output
sizes. :func:`intake_model` and :func:`intake_spec` are what the API runs in a
:class:`server.sandbox.Sandbox` child process.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter

import numpy as np
from fastapi import UploadFile

from server.errors import ApiError
from server.settings import Settings

CHUNK = 1 << 20
_V1_VAR = re.compile(r"(?<![A-Za-z0-9_.])([XY])_([0-9]+)(?![A-Za-z0-9_])")
_V2_SHAPE = re.compile(r"\(\s*declare-(?:input|output|hidden)\s+\S+\s+\S+\s+\[([0-9,\s]*)\]")


async def read_capped(upload: UploadFile, cap: int, what: str) -> bytes:
    """The bytes of an uploaded file, 413 past ``cap``."""
    parts, total = [], 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > cap:
            raise ApiError(413, f"{what} is larger than the limit of {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


def gunzip_capped(data: bytes, cap: int, what: str) -> bytes:
    """Decompress gzip ``data`` (every member) without producing more than ``cap`` bytes."""
    out, total = [], 0
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data, cap + 1 - total)
        except zlib.error as exc:
            raise ApiError(400, f"{what}: corrupt gzip data ({exc})") from None
        total += len(chunk)
        out.append(chunk)
        if total > cap or d.unconsumed_tail:
            raise ApiError(413, f"{what} decompresses to more than {cap} bytes "
                                "(refused as a possible gzip bomb)")
        if not d.eof:
            raise ApiError(400, f"{what}: truncated gzip stream")
        data = d.unused_data
    return b"".join(out)


def spec_text(data: bytes, settings: Settings, what: str = "spec") -> str:
    """Decoded spec text from plain or gzip bytes, within the size cap."""
    if data[:2] == b"\x1f\x8b":
        data = gunzip_capped(data, settings.max_spec_bytes, what)
    if len(data) > settings.max_spec_bytes:
        raise ApiError(413, f"{what} is larger than the limit of {settings.max_spec_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"{what} is not UTF-8 text (byte {exc.start})") from None


def prescan_spec(text: str, n_in: int, n_out: int, settings: Settings) -> None:
    """Refuse, before parsing, variable indices and declared shapes whose size alone could
    exhaust memory: ``X_i``/``Y_j`` beyond the model's sizes, 2.0 tensors above the cap."""
    from verifier.spec.declarations import MAX_INT_DIGITS, small_int
    for match in ([] if "declare-network" in text else _V1_VAR.finditer(text)):
        kind, index = match.group(1), small_int(match.group(2))
        if index is None:
            raise ApiError(422, f"spec refers to {kind}_{match.group(2)[:12]}... (an index of "
                                f"{len(match.group(2))} digits)")
        size = n_in if kind == "X" else n_out
        if index >= size:
            raise ApiError(422, f"spec refers to {kind}_{index}, but the model has only {size} "
                                f"{'input' if kind == 'X' else 'output'} value(s)")
    for match in _V2_SHAPE.finditer(text):
        dims = [small_int(d) for d in match.group(1).replace(" ", "").split(",") if d]
        if None in dims:
            raise ApiError(422, f"spec declares a tensor dimension of more than "
                                f"{MAX_INT_DIGITS} digits")
        if math.prod(dims) > settings.max_tensor_elements:
            raise ApiError(422, f"spec declares a tensor of shape [{match.group(1)}], above the "
                                f"limit of {settings.max_tensor_elements} elements")


def expansion_budget(text: str, n_in: int, settings: Settings) -> bool:
    """Refuse (422) a spec whose 'or's over inputs multiply out to more box values than
    ``max_spec_values``, before any box is built (exact integers). True when some top-level
    assert is constant false (the spec then has no region on purpose)."""
    from verifier.errors import SpecError
    from verifier.spec.normalize import check_box_budget
    from verifier.spec.parser import Parser

    parsed = Parser(text, "spec", settings.max_spec_terms, compose=True).parse()
    try:
        # a composed query's inputs can outnumber the model's (a network equal-to another)
        check_box_budget(parsed, max(n_in, parsed.decls.sizes()[0]), settings.max_spec_values)
    except SpecError as exc:
        raise ApiError(422, str(exc)) from None
    return parsed.false


def check_spec(text: str, summary: dict, settings: Settings) -> None:
    """Parse the spec and check it against the model's sizes (422 with the parser's message).
    A query only a composed model verifies (hidden tensors, several tensors, networks equal-to
    the uploaded one, products) is composed here once, so a mismatch is refused at submit.
    A model with a symbolic input dimension is imported here, that dimension set by the
    spec's input count (as the job will run it)."""
    from verifier.errors import SpecError
    from verifier.spec import parse_query

    symbolic = summary.get("symbolic_axis")
    if symbolic:  # sizes unknown until the spec sets them: each tensor's cap bounds indices
        n_in = n_out = 0
        cap = settings.max_tensor_elements
        prescan_spec(text, cap * len(summary["inputs"]), cap * len(summary["outputs"]),
                     settings)
    else:
        n_in, n_out = _tensor_values(summary["inputs"]), _tensor_values(summary["outputs"])
        prescan_spec(text, n_in, n_out, settings)
    try:
        always_false = expansion_budget(text, n_in, settings)
        query = parse_query(text, "spec", max_terms=settings.max_spec_terms, compose=True)
    except SpecError as exc:
        raise ApiError(422, f"invalid VNN-LIB spec: {exc}") from None
    except (MemoryError, RecursionError):
        raise ApiError(422, "spec is too large or too deeply nested to parse") from None
    spec = query.spec
    if not spec.regions and not always_false:
        raise ApiError(422, "spec has no input to verify: every input box is empty (some "
                            "input's lower bound is above its upper bound)")
    if query.needs_composition:
        if symbolic:
            raise ApiError(422, f"a composed query needs a model with static input shapes; "
                                f"this one's input {symbolic} is symbolic")
        check_composition(query, summary, settings)
        return
    if symbolic:
        summary = pinned_summary(summary, spec.n_inputs, settings)
        n_in, n_out = _tensor_values(summary["inputs"]), _tensor_values(summary["outputs"])
    if spec.n_inputs != n_in:
        raise ApiError(422, f"spec declares {spec.n_inputs} input variables, the model has {n_in}")
    if spec.n_outputs != n_out:
        raise ApiError(422, f"spec declares {spec.n_outputs} output variables, "
                            f"the model has {n_out}")


def _tensor_values(tensors: list[dict]) -> int:
    return sum(math.prod(t["shape"]) for t in tensors)


def pinned_summary(summary: dict, n_inputs: int, settings: Settings) -> dict:
    """The summary of the stored model with its symbolic input dimension set so that its
    inputs hold ``n_inputs`` values (the import, size and constant checks of
    :func:`check_model` at that size); 422 when no size fits."""
    from server.artifacts import Artifacts
    from verifier.errors import ModelError
    from verifier.onnx_import.loader import read_model_proto
    from verifier.onnx_import.symbolic_axes import pin_symbolic_axes

    proto, _ = read_model_proto(Artifacts(settings.data_dir).path("models", summary["id"]))
    try:
        pin_symbolic_axes(proto, n_inputs, "uploaded model")
    except ModelError as exc:
        raise ApiError(422, f"spec does not fit the model: {exc}") from None
    return check_model(proto.SerializeToString(), summary["id"], settings)


def check_composition(query, summary: dict, settings: Settings) -> None:
    """422 unless the uploaded model stands for every network of ``query`` and the composed
    model builds (declared tensors bound to the model's, hidden tensors found)."""
    from server.artifacts import Artifacts
    from verifier.compose.bind import one_model_per_network
    from verifier.compose.build import compose
    from verifier.compose.run import networks_of
    from verifier.errors import ModelError, SpecError, UnsupportedOpError
    from verifier.onnx_import.loader import read_model_proto

    proto, _ = read_model_proto(Artifacts(settings.data_dir).path("models", summary["id"]))
    try:
        models = one_model_per_network(query.info, proto)
        compose(networks_of(query, models), models, query.layout)
    except (SpecError, ModelError, UnsupportedOpError) as exc:
        raise ApiError(422, f"invalid VNN-LIB spec: {exc}") from None


def check_sizes(tensors, settings: Settings) -> None:
    """422 when a tensor (name, dims) has more elements than ``settings.max_tensor_elements``."""
    for name, dims in tensors:
        if math.prod(max(int(d), 1) for d in dims) > settings.max_tensor_elements:
            raise ApiError(422, f"tensor {name!r} of shape {list(dims)} has more than "
                                f"{settings.max_tensor_elements} elements")


def check_model(data: bytes, digest: str, settings: Settings) -> dict:
    """Parse, cap and import an ONNX model; the summary dict of :class:`ModelSummary`.

    Malformed protobuf -> 400; refused or unsupported model -> 422.
    """
    from verifier.errors import ModelError, UnsupportedOpError
    from verifier.onnx_import.fold import FoldTooLarge
    from verifier.onnx_import.loader import import_proto, opset_of, parse_model_bytes

    try:
        proto = parse_model_bytes(data, "uploaded model")
    except ModelError as exc:
        raise ApiError(400, str(exc)) from None
    nodes = len(proto.graph.node)
    if nodes > settings.max_nodes:
        raise ApiError(422, f"model has {nodes} nodes, above the limit of {settings.max_nodes}")
    # exact integers: np.prod wraps around (dims 2^32 x 2^32 gave 0 and passed the cap)
    params = sum(math.prod(int(d) for d in t.dims) for t in proto.graph.initializer)
    if params > settings.max_parameters:
        raise ApiError(422, f"model has {params} parameters, above the limit of "
                            f"{settings.max_parameters}")
    opset = opset_of(proto)
    if opset > settings.max_opset:
        raise ApiError(422, f"model opset {opset} is above the supported {settings.max_opset}")
    declared = [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]
    check_sizes(((v.name, [d.dim_value for d in v.type.tensor_type.shape.dim])
                 for v in declared), settings)
    summary = {"id": digest, "size_bytes": len(data), "opset": opset,
               "ops": dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
               "parameters": params}
    symbolic = symbolic_summary(proto)
    if symbolic:  # imported once a spec sets the dimension (check_spec)
        return {**summary, **symbolic}
    try:
        imported = import_proto(proto, data, "uploaded model")
    except FoldTooLarge as exc:
        raise ApiError(422, f"model refused: {exc}") from None
    except (ModelError, UnsupportedOpError) as exc:
        return {**summary, **_attack_only_summary(data, exc)}
    except (MemoryError, RecursionError):
        raise ApiError(422, "model refused: importing it needs too much memory") from None
    graph = imported.graph
    check_sizes(((n.name, list(n.shape)) for n in graph.nodes), settings)
    check_constants(graph, settings)
    return {
        **summary,
        "inputs": [{"name": t.onnx_name or t.name, "shape": list(t.shape)} for t in graph.inputs],
        "outputs": [{"name": t.onnx_name or t.name, "shape": list(t.shape)}
                    for t in graph.outputs],
    }


def symbolic_summary(proto) -> dict | None:
    """Inputs, outputs and the symbolic dimension of a model with one symbolic non-batch input
    dimension (shown as -1; each spec's input count sets it); None without one; 422 with
    several."""
    from verifier.errors import ModelError
    from verifier.onnx_import.symbolic_axes import (
        declared_shape,
        describe,
        graph_inputs,
        symbolic_axis,
    )

    try:
        found = symbolic_axis(proto, "uploaded model")
    except ModelError as exc:
        raise ApiError(422, f"model refused: {exc}") from None
    if found is None:
        return None
    return {"inputs": [{"name": vi.name, "shape": declared_shape(vi)}
                       for vi in graph_inputs(proto)],
            "outputs": [{"name": vi.name, "shape": declared_shape(vi)}
                        for vi in proto.graph.output],
            "symbolic_axis": describe(*found)}


def check_constants(graph, settings: Settings) -> None:
    """422 when the imported graph's constants (initializers plus folded values) hold more
    values than ``max_parameters`` (exact integers)."""
    values = sum(math.prod(int(d) for d in np.shape(c))
                 for node in graph.nodes for c in node.consts.values())
    if values > settings.max_parameters:
        raise ApiError(422, f"model refused: its constants (initializers and folded values) "
                            f"hold {values} values, above the limit of {settings.max_parameters}")


def intake_model(data: bytes, digest: str, settings: Settings) -> dict:
    """Run in the sandbox: the checked model's summary (see :func:`check_model`)."""
    return check_model(data, digest, settings)


def intake_spec(raw: bytes, summary: dict, settings: Settings, what: str = "spec") -> str:
    """Run in the sandbox: decode (gunzip), check against the model and store the spec; its
    artifact id."""
    from server.artifacts import Artifacts

    text = spec_text(raw, settings, what)
    check_spec(text, summary, settings)
    return Artifacts(settings.data_dir).put("specs", text.encode("utf-8"))


def _attack_only_summary(data: bytes, exc: Exception) -> dict:
    """Inputs, outputs and the reason for a model the importer refuses but onnxruntime runs
    (its jobs are attacked only, as ``nncert verify`` does); 422 naming the importer's
    reason when onnxruntime cannot run it either."""
    from verifier.pipeline import ort_only_model, refusal_reason

    reason = refusal_reason(exc)
    model = ort_only_model(data, "uploaded model", reason)
    if model is None:
        raise ApiError(422, f"model refused: {exc}")
    return {
        "inputs": [{"name": n, "shape": list(s)}
                   for n, s in zip(model.input_names, model.onnx_input_shapes, strict=True)],
        "outputs": [{"name": n, "shape": list(s)}
                    for n, s in zip(model.output_names, model.output_shapes, strict=True)],
        "attack_only": reason,
    }
