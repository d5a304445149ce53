"""GridSample (opsets 16, 20, 22) on images: X [N, C, H, W], grid [N, Ho, Wo, 2].

torch's ``F.grid_sample`` exports to it (spatial transformers, fixed warps, deformable crops).

**Constant grid**: every output is a fixed weighted sum of at most K input pixels of its
image (K = 1 nearest, 4 linear, 16 cubic, fewer where taps fall outside or coincide under
border and reflection padding). The weights and pixels are read off onnxruntime, the runtime
counterexamples are checked with, on probe images: with taps spread over at most a 4 x 4
block, pixels whose row and column agree modulo s (s = 1 nearest, 2 linear, 4 cubic) never
share an output's window, so one probe channel per residue class holds 1 at those pixels
(the output is that pixel's weight) and another holds the pixel's index + 1 (the output over
the weight is the index). The op becomes Gather (the pixels) * weights, summed: a dot product
whose allowance covers the runtime's products and sums in any order.

**Input-dependent grid**: IR GridSample (``bounds/rules/grid_sample.py``: the hull of the
pixels the grid can reach). Cubic weights can be negative, so the hull does not hold for
them: an input-dependent grid with cubic mode is refused. Only 2-D sampling (rank-4 X) is
imported; opset 20's N-D form is refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, is_dyn, shape_of, unsupported
from verifier.onnx_import.registry import converter

# ONNX's mode names by opset (16: bilinear/bicubic; 20 on: linear/cubic) -> ours
_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic",
          "cubic": "cubic"}
_SPACING = {"nearest": 1, "linear": 2, "cubic": 4}
_PADDINGS = ("zeros", "border", "reflection")
# index + 1 is recovered as output / weight from float32 products: exact below 2**22
_MAX_PIXELS = 2**22


def _attrs(ctx: ConvertContext, node) -> dict:
    default = "bilinear" if ctx.opset < 20 else "linear"
    mode = ctx.attr(node, "mode", default)
    if mode not in _MODES:
        raise ModelError(f"GridSample node {node.name!r}: unknown mode {mode!r}")
    padding = ctx.attr(node, "padding_mode", "zeros")
    if padding not in _PADDINGS:
        raise ModelError(f"GridSample node {node.name!r}: unknown padding_mode {padding!r}")
    return {"mode": _MODES[mode], "padding_mode": padding,
            "align_corners": int(ctx.attr(node, "align_corners", 0))}


@converter("GridSample", 16)
def grid_sample(ctx: ConvertContext, node) -> None:
    x, grid = ctx.value(node.input[0]), ctx.value(node.input[1])
    x_shape, g_shape = tuple(shape_of(x)), tuple(shape_of(grid))
    if len(x_shape) != 4:
        raise unsupported(node, f"an input of rank {len(x_shape)} (only 2-D sampling: rank 4)")
    n, _, h, w = x_shape
    if len(g_shape) != 4 or g_shape[0] != n or g_shape[3] != 2:
        raise ModelError(f"GridSample node {node.name!r}: grid shape {list(g_shape)} does not "
                         f"fit input {list(x_shape)} (expected [{n}, H_out, W_out, 2])")
    attrs = _attrs(ctx, node)
    out_shape = (n, x_shape[1], g_shape[1], g_shape[2])
    if is_dyn(grid):
        if attrs["mode"] == "cubic":
            raise unsupported(node, "cubic mode at an input-dependent grid (its weights can "
                                    "be negative; only nearest and linear are bounded)")
        ctx.bind(node.output[0], ctx.emit("GridSample", [x, grid], out_shape, attrs))
        return
    if h * w >= _MAX_PIXELS:
        raise unsupported(node, f"an image of {h * w} pixels (at most {_MAX_PIXELS - 1})")
    taps, weights = sampling_taps(node, ctx.opset, attrs["mode"], (h, w),
                                  np.asarray(grid, np.float32))
    ctx.bind(node.output[0], _emit_weighted_taps(ctx, x, taps, weights, out_shape))


def sampling_taps(node, opset: int, mode: str, size: tuple[int, int], grid: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(pixel indices [N, P, K] into each image's H * W pixels, float32 weights [N, P, K]) of
    a constant ``grid`` [N, Ho, Wo, 2], read off onnxruntime (module docstring) for the
    node's ``mode`` (ours: nearest, linear, cubic); unused taps have weight 0 and index 0."""
    import onnxruntime as ort

    h, w = size
    n = grid.shape[0]
    s = _SPACING[mode]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    classes = [(a, b) for a in range(min(s, h)) for b in range(min(s, w))]
    member = np.stack([(rows % s == a) & (cols % s == b) for a, b in classes])  # [G, H, W]
    index = (rows * w + cols + 1).astype(np.float32)
    probe = np.concatenate([member, member * index]).astype(np.float32)  # [2G, H, W]
    probe = np.broadcast_to(probe, (n, *probe.shape)).copy()
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("GridSample", ["x", "g"], ["y"], **attrs)], "taps",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, probe.shape),
             helper.make_tensor_value_info("g", onnx.TensorProto.FLOAT, grid.shape)],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", max(opset, 16))])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": probe, "g": grid})
    g = len(classes)
    out = out.reshape(n, 2 * g, -1)
    weight, scaled = out[:, :g].transpose(0, 2, 1), out[:, g:].transpose(0, 2, 1)  # [N, P, G]
    used = weight != 0
    found = np.where(used, scaled.astype(np.float64) / np.where(used, weight, 1.0), 1.0)
    pixel = np.rint(found).astype(np.int64) - 1
    # each recovered index must be a pixel of its class (else the probe's premise failed)
    pr, pc = np.divmod(pixel, w)
    cls_r = np.array([a for a, _ in classes])
    cls_c = np.array([b for _, b in classes])
    ok = ((np.abs(found - np.rint(found)) < 1e-3) & (pixel >= 0) & (pixel < h * w)
          & (pr % s == cls_r) & (pc % s == cls_c))
    if not bool(np.all(ok | ~used)):
        raise unsupported(node, "its sampling weights could not be read off the runtime "
                                "(a tap outside the expected window)")
    return _compact(np.where(used, pixel, 0), np.where(used, weight, 0.0).astype(np.float32))


def _compact(taps: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The used taps first, as few per output as the busiest output needs (at least 1)."""
    order = np.argsort(weights == 0, axis=-1, kind="stable")
    taps = np.take_along_axis(taps, order, -1)
    weights = np.take_along_axis(weights, order, -1)
    k = max(1, int((weights != 0).sum(-1).max(initial=0)))
    return taps[..., :k], weights[..., :k]


def _emit_weighted_taps(ctx: ConvertContext, x, taps: np.ndarray, weights: np.ndarray,
                        out_shape: tuple) -> Dyn:
    """y[n, c, p] = sum_k weights[n, p, k] x[n, c, taps[n, p, k]] as IR: the pixels of all
    images in one axis (images moved behind the channels), one Gather, one Mul by the
    weights and a ReduceSum over k."""
    from verifier.onnx_import.converters.arithmetic import emit_broadcast
    from verifier.onnx_import.converters.shape import emit_gather, reshape_value

    n, c, ho, wo = out_shape
    _, _, h, w = shape_of(x)
    k = taps.shape[-1]
    flat_taps = (taps + (np.arange(n) * h * w)[:, None, None]).reshape(-1)  # [N * P * K]
    if n > 1:
        x = ctx.emit("Transpose", [x], (c, n, h, w), {"perm": (1, 0, 2, 3)})
    pixels = reshape_value(ctx, x, (c, n * h * w))
    picked = reshape_value(ctx, emit_gather(ctx, pixels, flat_taps, 1), (c, n, ho, wo, k))
    weighted = emit_broadcast(ctx, "Mul", [picked, weights.reshape(n, ho, wo, k)])
    y = ctx.emit("ReduceSum", [weighted], (c, n, ho, wo), {"axes": (4,), "keepdims": 0})
    if n > 1:
        return ctx.emit("Transpose", [y], out_shape, {"perm": (1, 0, 2, 3)})
    return reshape_value(ctx, y, out_shape)


for _version in (20, 22):
    converter("GridSample", _version)(grid_sample)
