"""Symbolic input dimensions fixed from the spec: a model exported with a dynamic sequence
length (``dynamic_axes`` / ``dynamic_shapes``) has inputs like ``[batch, seq, 28]``. Axis 0 is
the batch and is read as 1, as everywhere in the importer; one other symbolic dimension across
all inputs is then the only unknown, and the spec's number of input values fixes it."""

from __future__ import annotations

import logging
import math

import onnx

from verifier.errors import ModelError

log = logging.getLogger(__name__)


def _symbolic(d: onnx.TensorShapeProto.Dimension) -> bool:
    return not (d.HasField("dim_value") and d.dim_value > 0)


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    constant = {t.name for t in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in constant]


def pin_symbolic_axes(proto: onnx.ModelProto, n_values: int, label: str = "model") -> bool:
    """Set the one symbolic non-batch input dimension of ``proto`` (in place) so that the
    inputs hold ``n_values`` values in all; False when there is none. ModelError when there
    are several (the count fixes only their product) or no whole size fits."""
    unknown = [(vi, axis) for vi in _graph_inputs(proto)
               for axis, d in enumerate(vi.type.tensor_type.shape.dim)
               if axis > 0 and _symbolic(d)]
    if not unknown:
        return False
    where = ", ".join(f"{vi.name!r} axis {axis} ({_name(vi, axis)})" for vi, axis in unknown)
    if len(unknown) > 1:
        raise ModelError(f"{label}: symbolic input dimensions {where}; the spec's input count "
                         "fixes one only: export the model with static sizes for the others")
    target, axis = unknown[0]
    fixed = sum(math.prod(_known(vi)) for vi in _graph_inputs(proto) if vi is not target)
    per = math.prod(d for i, d in enumerate(_known(target)) if i != axis)
    rest = n_values - fixed
    if rest <= 0 or rest % per:
        raise ModelError(f"{label}: input {where} is symbolic and the spec's {n_values} input "
                         f"values do not fill it (the other dimensions hold {per} values per "
                         f"step{f', the other inputs {fixed}' if fixed else ''})")
    size = rest // per
    dim = target.type.tensor_type.shape.dim[axis]
    log.info("%s: input %s set to %d from the spec's %d input values", label, where, size,
             n_values)
    dim.Clear()
    dim.dim_value = size
    return True


def _known(vi: onnx.ValueInfoProto) -> list[int]:
    """The input's dimensions, a symbolic one read as 1 (the batch axis, or the unknown)."""
    return [1 if _symbolic(d) else int(d.dim_value) for d in vi.type.tensor_type.shape.dim]


def _name(vi: onnx.ValueInfoProto, axis: int) -> str:
    return repr(vi.type.tensor_type.shape.dim[axis].dim_param or "unnamed")
