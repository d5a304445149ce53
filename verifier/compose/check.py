"""Run the original networks in onnxruntime: sizes of declared values, and the independent
re-check of a counterexample.

Each network runs as its own ONNX model, unchanged except that its declared hidden values are
added as graph outputs (no Slice/Gather/Concat of ours), on the declared input tensors that the
free inputs ``z`` give. The declared values it returns, and ``Layout.outputs`` in float64 on
them, are what a counterexample is finally judged on: a bug in the rewritten model's plumbing
cannot make a wrong ``sat`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from verifier.compose.bind import NetworkBinding, check_type
from verifier.errors import SpecError
from verifier.onnx_import.ort import ort_session
from verifier.spec.layout import Layout
from verifier.spec.types import Spec
from verifier.validate import box_distance

_NP_TO_ONNX = {np.dtype(np.float32): onnx.TensorProto.FLOAT,
               np.dtype(np.float64): onnx.TensorProto.DOUBLE}


def exposed_bytes(binding: NetworkBinding) -> bytes:
    """The network's model with its declared hidden values added as graph outputs."""
    model = onnx.ModelProto()
    model.CopyFrom(binding.model)
    present = {vi.name for vi in model.graph.output}
    for decl, name in binding.values:
        if decl.kind == "hidden" and name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return model.SerializeToString()


@dataclass(eq=False)
class NetworkRunner:
    """onnxruntime on one network with its hidden values exposed."""

    binding: NetworkBinding
    data: bytes

    @classmethod
    def of(cls, binding: NetworkBinding) -> NetworkRunner:
        return cls(binding, exposed_bytes(binding))

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The declared values (declaration order) for the declared input tensors."""
        sess = ort_session(self.data)
        feeds = {}
        for b, x in zip(self.binding.inputs, inputs, strict=True):
            dtype = np.float64 if b.elem_type == onnx.TensorProto.DOUBLE else np.float32
            feeds[b.onnx_name] = np.asarray(x).reshape(b.shape).astype(dtype)
        names = [name for _, name in self.binding.values]
        return [np.asarray(v) for v in sess.run(names, feeds)]

    def probe(self) -> list[int]:
        """Run once on zeros; SpecError when a declared value's size is not the model's.
        Returns the values' ONNX element types."""
        outs = self.run([np.zeros(b.shape) for b in self.binding.inputs])
        types = []
        for (decl, name), out in zip(self.binding.values, outs, strict=True):
            if out.size != decl.size:
                raise SpecError(f"network {self.binding.decl.name}: {decl.kind} {decl.name} has "
                                f"{decl.size} elements, the model's value {name!r} {out.size} "
                                f"(shape {list(out.shape)})")
            if out.dtype not in _NP_TO_ONNX:
                raise SpecError(f"network {self.binding.decl.name}: {decl.name} is a {out.dtype} "
                                "tensor in the model; only floating-point values can be declared")
            check_type(self.binding.decl.name, decl, _NP_TO_ONNX[out.dtype])
            types.append(_NP_TO_ONNX[out.dtype])
        return types


def declared_inputs(runners: list[NetworkRunner], layout: Layout,
                    z: np.ndarray) -> list[list[np.ndarray]]:
    """Per network, its declared input tensors (float32 values) from the free inputs."""
    flat = layout.declared_inputs(np.asarray(z, dtype=np.float32))
    out = []
    for r in runners:
        pos, tensors = r.binding.input_offset, []
        for b in r.binding.inputs:
            tensors.append(flat[pos:pos + b.decl.size].astype(np.float32))
            pos += b.decl.size
        out.append(tensors)
    return out


@dataclass(frozen=True, eq=False)
class Assignment:
    """A checked assignment: per network, its declared tensors' values in declaration order."""

    # (name, kind, dtype, shape, float64 values) per declared tensor
    tensors: tuple[tuple[str, str, str, tuple[int, ...], np.ndarray], ...]
    values: np.ndarray  # the flat declared values (float64)


def evaluate(runners: list[NetworkRunner], layout: Layout, z: np.ndarray) -> Assignment:
    """Run every network on the inputs ``z`` gives and collect the assignment."""
    inputs = declared_inputs(runners, layout, z)
    tensors, values = [], []
    for r, ins in zip(runners, inputs, strict=True):
        outs = dict(zip((d.name for d, _ in r.binding.values), r.run(ins), strict=True))
        by_name = dict(zip((b.decl.name for b in r.binding.inputs), ins, strict=True))
        for decl in r.binding.decl.tensors or (*r.binding.decl.inputs, *r.binding.decl.values):
            v = by_name[decl.name] if decl.kind == "input" else outs[decl.name]
            v64 = np.asarray(v, dtype=np.float64).reshape(-1)
            tensors.append((decl.name, decl.kind, decl.dtype, decl.shape, v64))
        values += [np.asarray(outs[d.name], dtype=np.float64).reshape(-1)
                   for d in r.binding.decl.values]
    flat = np.concatenate(values) if values else np.zeros(0)
    return Assignment(tuple(tensors), flat)


def recheck(runners: list[NetworkRunner], layout: Layout, spec: Spec, z: np.ndarray,
            region: int, tolerance: float) -> Assignment | None:
    """The assignment when ``z`` lies in the region's box (within ``tolerance``) and the
    region's condition holds on the outputs recomputed in float64; None otherwise."""
    reg = spec.regions[region]
    z = np.asarray(z, dtype=np.float32).astype(np.float64)
    if z.size != spec.n_inputs or box_distance(z, reg) > tolerance:
        return None
    found = evaluate(runners, layout, z)
    y = layout.outputs(found.values, z)
    if y.size != spec.n_outputs or not np.all(np.isfinite(y)):
        return None
    return found if reg.condition.holds(y) else None
