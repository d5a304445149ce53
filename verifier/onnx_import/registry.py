"""Converters from ONNX nodes to IR nodes, keyed by (op_type, since_version).

A converter is registered with ``@converter("Gemm", 1)``; for a model of opset N the converter
with the largest since_version <= N is used. Converters are plain functions
``fn(ctx: ConvertContext, node: onnx.NodeProto) -> None`` that read inputs through ``ctx`` and
bind each ONNX output to a constant (numpy) or to a new IR node.
"""

from __future__ import annotations

from bounds.registry import Registry, UnsupportedOpError

CONVERTERS = Registry("ONNX converter")


def converter(op_type: str, since_version: int = 1):
    def register(fn):
        CONVERTERS.register((op_type, since_version), fn)
        return fn

    return register


def find_converter(op_type: str, opset: int, node_name: str = ""):
    versions = [v for (op, v) in CONVERTERS.keys() if op == op_type and v <= opset]
    if not versions:
        raise UnsupportedOpError(op_type, node_name, supported_ops())
    return CONVERTERS.get((op_type, max(versions)))


def supported_ops() -> list[str]:
    from verifier.onnx_import import converters  # noqa: F401  (explicit registration)

    return sorted({op for (op, _) in CONVERTERS.keys()})
