"""ONNX converters, one module per op family; importing this package registers them all."""

from verifier.onnx_import.converters import (
    activations,
    arithmetic,
    basic,
    composite,
    contrib,
    control_flow,
    conv,
    einsum,
    grid_sample,
    linear,
    logic,
    ml,
    pooling,
    quantize,
    rearrange,
    recurrent,
    scatter,
    sequence,
    shape,
    sorting,
    svm,
    trees,
)

__all__ = ["activations", "arithmetic", "basic", "composite", "contrib", "control_flow", "conv",
           "einsum", "grid_sample", "linear", "logic", "ml", "pooling", "quantize", "rearrange",
           "recurrent", "scatter", "sequence", "shape", "sorting", "svm", "trees"]
