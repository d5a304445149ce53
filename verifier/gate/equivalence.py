"""Equivalence properties: a new model against a reference model on an eps-ball.

Both models run on the same input in one ONNX model (:func:`verifier.compose.product_model`),
which is then verified like any other model, so bounds, attacks, branch and bound and MILP
apply unchanged. Two properties (``Y`` are the merged model's outputs, ``f`` the reference's
flattened output, ``g`` the new model's, ``K`` values each):

* ``max-diff D``: the merged model's one output is ``g - f`` (an ONNX ``Sub`` node). The unsafe
  set is ``OR_j (Y_j >= D) OR (Y_j <= -D)``; ``unsat`` proves ``|g(x) - f(x)|_inf < D`` on the
  ball. The difference node lets the backward bound pass (CROWN) cancel the terms the two
  models share: the input's coefficients through ``g`` and through ``f`` are summed before they
  are concretised, where two separate outputs bounded one by one would add two boxes' slack.
* ``same-label``: the merged model's output is ``concat(f, g)`` (``2K`` values). The unsafe set
  is ``OR_{i, k != i} (AND_{j} f_j <= f_i) AND (g_k >= g_i)``: some class ``i`` is on top for
  the reference (ties included) while the new model puts another class ``k`` at least as high.
  ``unsat`` proves that ``argmax f = argmax g`` everywhere on the ball, each with a unique top.

Reaching ``D`` exactly, and ties, count as violations (as the robustness gate counts ties).
A counterexample is validated on the merged model by the pipeline (onnxruntime), then here
again by running the two original models on their own (:meth:`EquivalenceProblem.check`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from verifier.errors import ModelError, NncertError
from verifier.gate.specs import box_vnnlib_lines

log = logging.getLogger(__name__)

MODES = ("max-diff", "same-label")
PREFIXES = ("reference/", "model/")
OUTPUT = "gate/out"


@dataclass(frozen=True)
class EquivalenceProperty:
    """What the gate proves per sample: ``mode`` in MODES; ``max_diff`` (> 0) for max-diff."""

    reference: str
    mode: str
    max_diff: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise NncertError(f"unknown equivalence property {self.mode!r} (use {MODES})")
        d = self.max_diff
        if self.mode == "max-diff" and (d is None or not (math.isfinite(d) and d > 0)):
            raise NncertError(f"--max-diff must be a finite number > 0, got {d!r}")

    def describe(self) -> str:
        if self.mode == "max-diff":
            return f"|model - reference|_inf < {self.max_diff:g}"
        return "same label as the reference"


def single_output(model: onnx.ModelProto, which: str) -> tuple[onnx.ValueInfoProto, int]:
    """The model's one output and its element count; ModelError otherwise."""
    outs = list(model.graph.output)
    if len(outs) != 1:
        raise ModelError(f"the equivalence gate needs one output tensor per model; the {which} "
                         f"has {len(outs)} ({', '.join(o.name for o in outs)})")
    dims = outs[0].type.tensor_type.shape.dim
    if not dims or any(not d.HasField("dim_value") and i > 0 for i, d in enumerate(dims)):
        raise ModelError(f"the {which}'s output {outs[0].name!r} needs a static shape")
    return outs[0], math.prod(d.dim_value if d.HasField("dim_value") else 1 for d in dims)


def merged_model(reference: onnx.ModelProto, model: onnx.ModelProto,
                 mode: str) -> onnx.ModelProto:
    """Both models on the shared (float32) input, with one output ``gate/out``: ``g - f``
    (max-diff) or ``concat(f, g)`` (same-label), flattened to ``[1, K]`` / ``[1, 2K]``."""
    from verifier.compose.product import product_model

    _, k_ref = single_output(reference, "reference")
    _, k_new = single_output(model, "model")
    if k_ref != k_new:
        raise ModelError(f"the reference has {k_ref} output values, the model {k_new}; the "
                         "equivalence gate compares them one by one")
    product = product_model([reference, model], PREFIXES, input_elem_type=TensorProto.FLOAT)
    flat = [_flatten(product, out, k_ref, tag) for out, tag in zip(
        list(product.graph.output), ("f", "g"), strict=True)]
    if mode == "max-diff":
        product.graph.node.append(helper.make_node("Sub", [flat[1], flat[0]], [OUTPUT],
                                                   name="gate/diff"))
        width = k_ref
    else:
        product.graph.node.append(helper.make_node("Concat", flat, [OUTPUT], axis=1,
                                                   name="gate/concat"))
        width = 2 * k_ref
    del product.graph.output[:]
    product.graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                                              [1, width]))
    onnx.checker.check_model(product)
    return product


def _flatten(product: onnx.ModelProto, out: onnx.ValueInfoProto, k: int, tag: str) -> str:
    """Nodes turning one model's output into float32 ``[1, K]``; the new value's name."""
    name = out.name
    if out.type.tensor_type.elem_type != TensorProto.FLOAT:
        product.graph.node.append(helper.make_node("Cast", [name], [f"gate/{tag}_f32"],
                                                   to=TensorProto.FLOAT, name=f"gate/cast_{tag}"))
        name = f"gate/{tag}_f32"
    product.graph.initializer.append(numpy_helper.from_array(np.array([1, k], np.int64),
                                                             f"gate/{tag}_shape"))
    product.graph.node.append(helper.make_node("Reshape", [name, f"gate/{tag}_shape"],
                                               [f"gate/{tag}"], name=f"gate/flat_{tag}"))
    return f"gate/{tag}"


def unsafe_vnnlib(prop: EquivalenceProperty, k: int) -> list[str]:
    """The VNN-LIB assertion (lines) of the unsafe set over the merged model's outputs."""
    if prop.mode == "max-diff":
        d = float(prop.max_diff)
        rows = [f"    (and (>= Y_{j} {d!r}))\n    (and (<= Y_{j} {-d!r}))" for j in range(k)]
        return ["(assert (or", *rows, "))"]
    if k < 2:
        raise ModelError("--same-label needs models with at least 2 output values")
    rows = []
    for i in range(k):
        top = " ".join(f"(<= Y_{j} Y_{i})" for j in range(k) if j != i)
        rows += [f"    (and {top} (>= Y_{k + m} Y_{k + i}))" for m in range(k) if m != i]
    return ["(assert (or", *rows, "))"]


def equivalence_vnnlib(lower: np.ndarray, upper: np.ndarray, prop: EquivalenceProperty, k: int,
                       comment: str = "") -> str:
    """VNN-LIB 1.0 text for the merged model: the box and the unsafe set."""
    n_out = k if prop.mode == "max-diff" else 2 * k
    lines = box_vnnlib_lines(lower, upper, n_out, comment)
    lines += unsafe_vnnlib(prop, k)
    return "\n".join(lines) + "\n"


def violation(prop: EquivalenceProperty, f: np.ndarray, g: np.ndarray) -> bool:
    """True when outputs ``f`` (reference) and ``g`` (model) lie in the unsafe set."""
    f, g = np.asarray(f, np.float64).reshape(-1), np.asarray(g, np.float64).reshape(-1)
    if prop.mode == "max-diff":
        return bool(np.max(np.abs(g - f)) >= prop.max_diff)
    for i in np.flatnonzero(f >= f.max()):  # every class on top for the reference (ties too)
        if np.any(np.delete(g, i) >= g[i]):
            return True
    return False
