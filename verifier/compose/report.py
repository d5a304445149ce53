"""How a checked assignment of a composed query is written.

* VNN-LIB 2.0 command line: every declared tensor of every network in declaration order
  (inputs, hidden, outputs as declared), ``NAME TYPE [dims]`` then one value per line,
  row-major; values are the exact float32 numbers onnxruntime ran on or computed
  (``repr(float(v))`` round-trips them).
* VNN-COMP results file: ``((X_0 v) ... (Y_0 v) ...)`` over the concatenation of every
  declared input element, then of every declared hidden and output element, in declaration
  order.
"""

from __future__ import annotations

import numpy as np

from verifier.cli.output import number
from verifier.compose.check import Assignment


def assignment_text(assignment: Assignment) -> str:
    """The VNN-LIB 2.0 command-line assignment (no trailing newline)."""
    lines = []
    for name, _kind, dtype, shape, values in assignment.tensors:
        lines.append(f"{name} {dtype} [{','.join(str(d) for d in shape)}]")
        lines += [number(v) for v in values]
    return "\n".join(lines)


def flat_inputs_outputs(assignment: Assignment) -> tuple[np.ndarray, np.ndarray]:
    """(every declared input element, every declared hidden and output element), in order."""
    ins = [v for _, kind, _, _, v in assignment.tensors if kind == "input"]
    outs = [v for _, kind, _, _, v in assignment.tensors if kind != "input"]
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return join(ins), join(outs)
