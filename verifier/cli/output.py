"""How verdicts and counterexamples are written: VNN-COMP results files, VNN-LIB 2.0 assignments.

Values are written with ``repr(float(v))``: the shortest decimal that parses back to the same
double, so a float32 counterexample round-trips exactly (to float64 and to float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def number(value: float) -> str:
    """A lossless decimal for one value."""
    return repr(float(value))


def vnncomp_counterexample(x, y) -> str:
    """``((X_0 v)\\n (X_1 v)\\n ... (Y_0 v) ...)``: flattened row-major input then output."""
    import numpy as np

    items = [f"(X_{i} {number(v)})" for i, v in enumerate(np.asarray(x).reshape(-1))]
    items += [f"(Y_{i} {number(v)})" for i, v in enumerate(np.asarray(y).reshape(-1))]
    return "(" + "\n ".join(items) + ")"


def vnncomp_result_text(verdict: str, counterexample=None) -> str:
    """The content of a VNN-COMP results file: the verdict line, then the counterexample."""
    text = verdict + "\n"
    if verdict == "sat" and counterexample is not None:
        text += vnncomp_counterexample(counterexample.x, counterexample.y) + "\n"
    return text


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass(frozen=True)
class Variable:
    """One declared tensor of a VNN-LIB 2.0 network: name, element type, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _field(obj, name: str, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def declared_variables(info) -> tuple[list[Variable], list[Variable]] | None:
    """Input and output declarations of the query's network, when the spec parser exposes them.

    Expected (duck-typed, as ``verifier.spec.query.QueryInfo``): ``info.networks`` = sequence
    of objects with ``name``, ``inputs`` and ``outputs``; each declaration has ``name``,
    ``dtype`` and ``shape``.
    """
    networks = getattr(info, "networks", None) or ()
    if len(networks) != 1:
        return None
    net = networks[0]

    def convert(decls) -> list[Variable]:
        return [Variable(str(_field(d, "name")), str(_field(d, "dtype", "float32")),
                         tuple(int(s) for s in _field(d, "shape", ()))) for d in decls or ()]

    inputs, outputs = convert(_field(net, "inputs")), convert(_field(net, "outputs"))
    return (inputs, outputs) if inputs and outputs else None


def default_variables(model) -> tuple[list[Variable], list[Variable]]:
    """Variables named after the model (X, Y; or X_i, Y_j when there are several). ``model``
    is an ImportedModel, or an OrtModel (no IR graph: shapes as onnxruntime reports them)."""
    graph = getattr(model, "graph", None)
    if graph is None:
        ins, outs = list(model.onnx_input_shapes), list(model.output_shapes)
    else:
        ins = [t.shape for t in graph.inputs]
        outs = [t.shape for t in graph.outputs]

    def named(prefix: str, shapes: Sequence[tuple[int, ...]]) -> list[Variable]:
        if len(shapes) == 1:
            return [Variable(prefix, "float32", tuple(shapes[0]))]
        return [Variable(f"{prefix}_{i}", "float32", tuple(s)) for i, s in enumerate(shapes)]

    return named("X", ins), named("Y", outs)


def vnnlib2_assignment(variables: Sequence[Variable], values) -> str:
    """VNN-LIB 2.0 command-line assignment: ``NAME TYPE [d0,d1]`` then one value per line."""
    import numpy as np

    values = np.asarray(values).reshape(-1)
    lines, pos = [], 0
    for var in variables:
        dims = ",".join(str(d) for d in var.shape)
        lines.append(f"{var.name} {var.dtype} [{dims}]")
        lines += [number(v) for v in values[pos:pos + var.size]]
        pos += var.size
    return "\n".join(lines)


def vnnlib2_result_text(verdict: str, counterexample, info, model) -> str:
    """stdout of the VNN-LIB 2.0 ``verify`` command: verdict (``timed-out``), then assignment."""
    word = "timed-out" if verdict == "timeout" else verdict
    text = word + "\n"
    if verdict == "sat" and counterexample is not None:
        declared = declared_variables(info) if info is not None else None
        inputs, outputs = declared or default_variables(model)
        text += vnnlib2_assignment(inputs, counterexample.x) + "\n"
        text += vnnlib2_assignment(outputs, counterexample.y) + "\n"
    return text
