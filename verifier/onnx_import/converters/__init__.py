"""ONNX converters, one module per op family; importing this package registers them all."""

from verifier.onnx_import.converters import (
    activations,
    arithmetic,
    basic,
    conv,
    linear,
    logic,
    pooling,
    scatter,
    shape,
)

__all__ = ["activations", "arithmetic", "basic", "conv", "linear", "logic", "pooling", "scatter",
           "shape"]
