"""Converters from ONNX nodes to IR nodes, keyed by (op_type, since_version).

A converter is registered with ``@converter("Gemm", 1)``; for a model of opset N the converter
with the largest since_version <= N is used. Converters are plain functions
``fn(ctx: ConvertContext, node: onnx.NodeProto) -> None`` that read inputs through ``ctx`` and
bind each ONNX output to a constant (numpy) or to a new IR node. Nodes whose inputs are all
constants never reach a converter: the loader folds them (verifier/onnx_import/fold.py).
"""

from __future__ import annotations

from functools import cache

from bounds.registry import Registry, UnsupportedOpError

CONVERTERS = Registry("ONNX converter")
# scikit-learn's operator domain (converters/ml.py): its ops are keyed apart (``ml_op``)
ML_DOMAIN = "ai.onnx.ml"


# onnxruntime's contrib operators (converters/contrib.py), keyed apart the same way
MS_DOMAIN = "com.microsoft"


def ml_op(op_type: str) -> str:
    """The registry key of an ``ai.onnx.ml`` operator (kept apart from the standard ops)."""
    return f"{ML_DOMAIN}.{op_type}"


# Ops imported only when all their operands are constant (folded): their output's shape would
# depend on input values otherwise. ``nncert supports --onnx-operators`` leaves them out.
CONSTANT_ONLY: set[str] = set()


def converter(op_type: str, since_version: int = 1, constant_only: bool = False):
    def register(fn):
        CONVERTERS.register((op_type, since_version), fn)
        if constant_only:
            CONSTANT_ONLY.add(op_type)
        _versions.cache_clear()
        return fn

    return register


@cache
def _versions() -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for op, version in CONVERTERS.keys():
        table.setdefault(op, []).append(version)
    return table


def find_converter(op_type: str, opset: int, node_name: str = ""):
    """The converter for ``op_type`` at ``opset``; UnsupportedOpError names op, node and list."""
    from verifier.onnx_import import converters  # noqa: F401  (explicit registration)

    versions = [v for v in _versions().get(op_type, ()) if v <= opset]
    if not versions:
        raise UnsupportedOpError(op_type, node_name, supported_ops())
    return _naming_dynamic_operands(CONVERTERS.get((op_type, max(versions))))


def _naming_dynamic_operands(convert):
    """``convert`` with a DynamicOperandError (an operand that must be constant is not)
    re-raised as an UnsupportedOpError naming the op and the node."""
    from verifier.onnx_import.context import DynamicOperandError

    def run(ctx, node) -> None:
        try:
            convert(ctx, node)
        except DynamicOperandError as exc:
            raise UnsupportedOpError(node.op_type, node.name, reason=str(exc)) from None

    return run


def supported_ops() -> list[str]:
    from verifier.onnx_import import converters  # noqa: F401  (explicit registration)

    return sorted({op for (op, _) in CONVERTERS.keys()})


def listed_ops() -> list[str]:
    """The ops ``nncert supports --onnx-operators`` lists: those imported with input-dependent
    operands (constant-only ops fold, but are not claimed)."""
    return [op for op in supported_ops() if op not in CONSTANT_ONLY]
