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
    """A named or unset dimension (a dim_value of 0 or below is a static one the importer
    refuses)."""
    return not d.HasField("dim_value")


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs that are not initializers."""
    constant = {t.name for t in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in constant]


def symbolic_axis(proto: onnx.ModelProto, label: str = "model"
                  ) -> tuple[onnx.ValueInfoProto, int] | None:
    """The (input, axis) of the one symbolic non-batch input dimension of ``proto``; None when
    there is none. ModelError when there are several (an input count fixes only their
    product)."""
    unknown = [(vi, axis) for vi in graph_inputs(proto)
               for axis, d in enumerate(vi.type.tensor_type.shape.dim)
               if axis > 0 and _symbolic(d)]
    if len(unknown) > 1:
        raise ModelError(f"{label}: symbolic input dimensions {_where(unknown)}; the spec's "
                         "input count fixes one only: export the model with static sizes for "
                         "the others")
    return unknown[0] if unknown else None


def describe(vi: onnx.ValueInfoProto, axis: int) -> str:
    """``'x' axis 1 ('seq')``: the dimension as messages name it."""
    return f"{vi.name!r} axis {axis} ({_name(vi, axis)})"


def _where(unknown) -> str:
    return ", ".join(describe(vi, axis) for vi, axis in unknown)


def pin_symbolic_axes(proto: onnx.ModelProto, n_values: int, label: str = "model") -> bool:
    """Set the one symbolic non-batch input dimension of ``proto`` (in place) so that the
    inputs hold ``n_values`` values in all; False when there is none. ModelError when there
    are several (``symbolic_axis``) or no whole size fits."""
    found = symbolic_axis(proto, label)
    if found is None:
        return False
    where = describe(*found)
    target, axis = found
    fixed = sum(math.prod(_known(vi)) for vi in graph_inputs(proto) if vi is not target)
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


def declared_shape(vi: onnx.ValueInfoProto) -> list[int]:
    """The dimensions as declared: a symbolic batch axis (axis 0) as 1, any other symbolic
    dimension as -1 (set by a spec's input count)."""
    return [(-1 if axis else 1) if _symbolic(d) else int(d.dim_value)
            for axis, d in enumerate(vi.type.tensor_type.shape.dim)]
