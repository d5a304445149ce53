"""Errors that the CLI and the service turn into one clear line (exit status 2 / HTTP 4xx)."""

from __future__ import annotations

from bounds.registry import UnsupportedOpError


class NncertError(Exception):
    """Base class: a problem with the user's input or request, with a message that names it."""


class ModelError(NncertError):
    """The ONNX model cannot be read, is malformed, or is refused (external data, ...)."""


class ConstantOutputError(ModelError):
    """Every output of the model is a constant: no value depends on the input. Nothing is
    left to bound; one evaluation of the model decides every property."""


class SpecError(NncertError):
    """The VNN-LIB property is malformed, unbounded or does not match the model."""


class ModelMismatchError(ModelError):
    """Our IR disagrees with onnxruntime on sampled points: refuse rather than answer wrongly."""


__all__ = ["NncertError", "ModelError", "SpecError", "ModelMismatchError", "UnsupportedOpError"]
