"""Several ONNX models on shared inputs, as one ONNX model (the *product* graph).

``product_model([f, g], ["f_", "g_"])`` is a model whose inputs are the shared inputs (the first
model's input names, matched by position: every model must declare the same number of inputs
with the same shapes), whose nodes and initializers are every model's, with each model's names
prefixed, and whose outputs are every model's outputs in order, named ``prefix + name``. Running
the product on ``x`` gives exactly what running each model on ``x`` gives: the models' nodes are
copied unchanged, only renamed; each model reads the shared inputs through an ``Identity`` (or a
``Cast`` where its input's element type differs from the shared one, e.g. a float16 copy of a
float32 model).

One ONNX model has one version of the default operator set: models on different versions are
converted to the newest of them with ``onnx.version_converter``; where that conversion fails
the product is refused (ModelError naming the model and both versions).

Used by the equivalence gate (``nncert gate --reference``) and by VNN-LIB 2.0 queries over
several networks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from verifier.errors import ModelError

log = logging.getLogger(__name__)

_DEFAULT_DOMAINS = ("", "ai.onnx")


def product_model(models: Sequence[onnx.ModelProto], prefixes: Sequence[str],
                  input_elem_type: int | None = None) -> onnx.ModelProto:
    """One model running every model of ``models`` on the same inputs (see the module text).

    ``input_elem_type``: the shared inputs' ONNX element type (``TensorProto.FLOAT``, say);
    by default the first model's.

    Raises ModelError when the models' inputs differ in number or shape, when the prefixes do
    not keep every name apart, or when an operator-set version cannot be converted.
    """
    _check_prefixes(models, prefixes)
    opset = max(default_opset(m) for m in models)
    converted = [_at_opset(m, opset, i, p) for i, (m, p) in enumerate(zip(models, prefixes,
                                                                          strict=True))]
    shared = _shared_inputs(converted, prefixes)
    if input_elem_type is not None:
        for vi in shared:
            vi.type.tensor_type.elem_type = input_elem_type
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    value_infos: list[onnx.ValueInfoProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    functions: list[onnx.FunctionProto] = []
    for model, prefix in zip(converted, prefixes, strict=True):
        renamed = onnx.compose.add_prefix(model, prefix)  # local functions and their calls too
        graph = renamed.graph
        functions += renamed.functions
        nodes += _bridges(shared, real_inputs(graph), prefix)
        nodes += graph.node
        initializers += graph.initializer
        value_infos += graph.value_info
        outputs += graph.output
    graph = helper.make_graph(nodes, "product", list(shared), outputs, initializers,
                              value_info=value_infos)
    _check_unique(graph)
    product = helper.make_model(graph, opset_imports=_opset_imports(converted, opset),
                                producer_name="nncert product_model")
    # IR 4 is the first to allow initializers that are not graph inputs (weights are not
    # shared inputs, so they are not listed as inputs here).
    product.ir_version = max(4, *(m.ir_version for m in converted))
    product.functions.extend(functions)
    return product


def default_opset(model: onnx.ModelProto) -> int:
    """The model's version of the default (``ai.onnx``) operator set (1 when absent)."""
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    return 1


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs that are not initializers (old models list weights as inputs)."""
    constant = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in constant]


def _check_prefixes(models: Sequence[onnx.ModelProto], prefixes: Sequence[str]) -> None:
    if not models:
        raise ModelError("a product of models needs at least one model")
    if len(models) != len(prefixes):
        raise ModelError(f"{len(models)} models but {len(prefixes)} prefixes")
    for i, p in enumerate(prefixes):
        if not p:
            raise ModelError(f"model {i}: the prefix must not be empty")
        for j, q in enumerate(prefixes[:i]):
            if p.startswith(q) or q.startswith(p):
                raise ModelError(f"prefixes {q!r} (model {j}) and {p!r} (model {i}) may make "
                                 "equal names: no prefix may start another")


def _at_opset(model: onnx.ModelProto, opset: int, i: int, prefix: str) -> onnx.ModelProto:
    """``model`` on default operator set ``opset`` (converted when it is older)."""
    have = default_opset(model)
    if have == opset:
        return model
    from onnx import version_converter

    log.info("model %d (%s): converting operator set %d to %d", i, prefix, have, opset)
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError and friends
        raise ModelError(f"model {i} ({prefix!r}) uses operator set {have} and cannot be "
                         f"converted to {opset}, the newest among the models: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         ) from None


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    """Shape as ints (fixed) and strings (symbolic); ModelError when the rank is unknown."""
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        raise ModelError(f"input {vi.name!r} declares no tensor shape")
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _compatible(a: list[int | str], b: list[int | str]) -> bool:
    """Same rank, and equal where both dimensions are fixed numbers."""
    return len(a) == len(b) and all(
        x == y or isinstance(x, str) or isinstance(y, str) for x, y in zip(a, b, strict=True))


def _shared_inputs(models: Sequence[onnx.ModelProto],
                   prefixes: Sequence[str]) -> list[onnx.ValueInfoProto]:
    """The first model's inputs, after checking every model declares compatible ones."""
    first = real_inputs(models[0].graph)
    for i, model in enumerate(models[1:], 1):
        mine = real_inputs(model.graph)
        if len(mine) != len(first):
            raise ModelError(f"model {i} ({prefixes[i]!r}) has {len(mine)} inputs "
                             f"({', '.join(v.name for v in mine)}), model 0 has {len(first)} "
                             f"({', '.join(v.name for v in first)}); inputs are matched by "
                             "position")
        for k, (a, b) in enumerate(zip(first, mine, strict=True)):
            if not _compatible(_dims(a), _dims(b)):
                raise ModelError(f"input {k}: model 0's {a.name!r} has shape {_dims(a)}, model "
                                 f"{i}'s ({prefixes[i]!r}) {b.name!r} has shape {_dims(b)}")
    return [_copy(vi) for vi in first]


def _copy(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    return out


def _bridges(shared: Sequence[onnx.ValueInfoProto], mine: Sequence[onnx.ValueInfoProto],
             prefix: str) -> list[onnx.NodeProto]:
    """Nodes feeding each shared input to a model's (prefixed) input: Identity, or Cast to
    the model's own element type where it differs."""
    nodes = []
    for k, (src, dst) in enumerate(zip(shared, mine, strict=True)):
        want = dst.type.tensor_type.elem_type
        if want != src.type.tensor_type.elem_type and want != TensorProto.UNDEFINED:
            nodes.append(helper.make_node("Cast", [src.name], [dst.name], to=want,
                                          name=f"{prefix}input_cast_{k}"))
        else:
            nodes.append(helper.make_node("Identity", [src.name], [dst.name],
                                          name=f"{prefix}input_{k}"))
    return nodes


def _check_unique(graph: onnx.GraphProto) -> None:
    """Every value is produced once: by a shared input, an initializer or one node output."""
    seen: dict[str, str] = {}
    produced = [(vi.name, "shared input") for vi in graph.input]
    produced += [(t.name, "initializer") for t in graph.initializer]
    produced += [(o, f"node {n.name!r}") for n in graph.node for o in n.output if o]
    for name, what in produced:
        if name in seen:
            raise ModelError(f"name {name!r} is made by both {seen[name]} and {what}; choose "
                             "prefixes that keep the models' names apart")
        seen[name] = what
    outputs = [o.name for o in graph.output]
    if len(set(outputs)) != len(outputs):
        raise ModelError(f"the product would have repeated output names: {outputs}")


def _opset_imports(models: Sequence[onnx.ModelProto], opset: int) -> list:
    """The default set at ``opset`` plus every other domain (one version per domain)."""
    versions: dict[str, int] = {}
    for i, model in enumerate(models):
        for entry in model.opset_import:
            if entry.domain in _DEFAULT_DOMAINS:
                continue
            if versions.setdefault(entry.domain, entry.version) != entry.version:
                raise ModelError(f"model {i} uses domain {entry.domain!r} version "
                                 f"{entry.version}, another model version "
                                 f"{versions[entry.domain]}")
    return [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v)
                                                for d, v in versions.items()]

