"""Linear and cubic Resize (and Upsample's linear mode) as fixed linear maps, one per resized
axis.

n-linear and cubic interpolation are separable: along each axis the output is M x with a
constant matrix M [out, in] that depends only on that axis's sizes and the node's
attributes. M is read off the ONNX reference implementation: a one-axis Resize of the identity
matrix (scale 1, an exact identity under every coordinate mode handled, on the other axis)
returns M's columns. Each resized axis becomes a Linear over the last axis (moved there and
back by Transposes); its dot-product allowance covers the runtime's weighted sums and its own
float32 weights. ``tf_crop_and_resize`` (a region of interest), an ``axes`` subset and
aspect-ratio policies are refused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.linear import emit_linear

# Attributes that shape the 1-D interpolation (copied to the probe node).
_KERNEL_ATTRS = ("mode", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside",
                 "antialias")


def kernel_attrs(node: onnx.NodeProto, legacy: bool) -> dict:
    """The node's interpolation attributes for an opset-11 probe; ``legacy`` (Resize 10,
    Upsample): their fixed coordinate mode, asymmetric, and ``bilinear`` read as linear."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
             if a.name in _KERNEL_ATTRS}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if legacy:
        attrs["coordinate_transformation_mode"] = "asymmetric"
        if attrs.get("mode") == "bilinear":
            attrs["mode"] = "linear"
    return attrs


def axis_matrix(attrs: dict, opset: int, size: int, out: int, scale: float | None
                ) -> np.ndarray:
    """M [out, size] of one axis: resizing an ``size``-long axis to ``out`` (by ``scale``
    when given, else to the size) with the interpolation ``attrs``."""
    from onnx.reference import ReferenceEvaluator

    if scale is not None:
        inputs = ["x", "", "s"]
        feeds = {"x": np.eye(size, dtype=np.float32),
                 "s": np.array([1.0, scale], dtype=np.float32)}
    else:
        inputs = ["x", "", "", "n"]
        feeds = {"x": np.eye(size, dtype=np.float32), "n": np.array([size, out], np.int64)}
    probe = helper.make_node("Resize", inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [probe], "probe",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), None)
         for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 11))])
    (rows,) = ReferenceEvaluator(model).run(None, feeds)
    rows = np.asarray(rows, dtype=np.float64)  # [size, out]: row i resizes e_i
    if rows.shape != (size, out):
        raise ValueError(f"the probe gave shape {rows.shape}, expected {(size, out)}")
    return rows.T


def emit_interpolation(ctx: ConvertContext, node, x: Dyn, scales, sizes,
                       legacy: bool = False) -> Dyn:
    """The resized ``x``: per axis whose size or scale changes, a Linear by its matrix."""
    attrs = kernel_attrs(node, legacy)
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise unsupported(node, "coordinate_transformation_mode tf_crop_and_resize")
    if ctx.attr(node, "axes") is not None:
        raise unsupported(node, "an axes subset")
    if ctx.attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise unsupported(node, "a keep_aspect_ratio_policy other than stretch")
    y = x
    for axis, d in enumerate(x.shape):
        scale = None if scales is None else float(scales[axis])
        out = int(sizes[axis]) if sizes is not None else int(np.floor(d * scale))
        if out == d and (scale is None or scale == 1.0):
            continue
        try:
            matrix = axis_matrix(attrs, ctx.opset, d, out, scale)
        except Exception as exc:  # noqa: BLE001  (the reference refuses what it cannot do)
            raise unsupported(node, f"its interpolation along axis {axis} could not be "
                                    f"derived ({type(exc).__name__}: {exc})") from None
        y = _along(ctx, y, axis, matrix.astype(np.float32))
    return y


def _along(ctx: ConvertContext, y: Dyn, axis: int, matrix: np.ndarray) -> Dyn:
    """``matrix`` [out, in] applied along ``axis`` of ``y``."""
    last = y.rank - 1
    if axis == last:
        return emit_linear(ctx, y, matrix, None)
    perm = list(range(y.rank))
    perm[axis], perm[last] = last, axis
    moved = ctx.emit("Transpose", [y], tuple(y.shape[p] for p in perm), {"perm": tuple(perm)})
    done = emit_linear(ctx, moved, matrix, None)
    return ctx.emit("Transpose", [done], tuple(done.shape[p] for p in perm),
                    {"perm": tuple(perm)})
