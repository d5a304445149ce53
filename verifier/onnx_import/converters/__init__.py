"""ONNX converters, one module per op family; importing this package registers them all."""

from verifier.onnx_import.converters import arithmetic, basic, linear, shape

__all__ = ["arithmetic", "basic", "linear", "shape"]
