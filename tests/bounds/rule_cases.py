"""Soundness cases for every registered op rule: how to build one node and its reference.

A case names the IR op, the node's attrs and inline constants, the per-sample input shape (one
dynamic input, at position ``dyn_pos``, or several in ``operands``), the box range to draw
inputs from (inside the op's domain), special points worth straddling (kinks, inflections,
integers), and how to build the one-node ONNX model that onnxruntime evaluates as the reference
(``onnx_inputs``: "x" (or "x<pos>") for a dynamic input, arrays for initializers, ``PerSample``
for a constant the model broadcasts over the batch, "" for an omitted optional input). The model
declares the op's real types: ``onnx_cast_in`` casts a float input to the type the op takes,
``onnx_out`` names a non-float output type, which the model casts back to float.
``numpy_ref`` is the float64 reference where onnxruntime has no double kernel (Atan, Erf,
LeakyRelu, exact Gelu, Conv, ConvTranspose, AveragePool, Resize), does not broadcast over the
batch axis (Concat with a constant), or gives bool/int (the step ops); the numpy references are
checked against onnxruntime in float32.
Every registered op needs a case (the meta-test fails otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto
from scipy import special

RNG = np.random.default_rng(1234)
BIG = (-1e4, 1e4)


@dataclass(frozen=True, eq=False)
class PerSample:
    """A constant input of the ONNX reference model that the model Expands over the batch axis
    (ONNX Concat does not broadcast): the IR's constant has no batch axis, ONNX's has."""

    value: np.ndarray


@dataclass(frozen=True)
class RuleCase:
    op: str
    label: str
    in_shape: tuple = (6,)
    out_shape: tuple | None = None  # None: same as in_shape
    attrs: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)
    dyn_pos: int = 0
    onnx_op: str = ""
    onnx_attrs: dict = field(default_factory=dict)
    onnx_inputs: tuple = ("x",)
    opset: int = 17
    domain: tuple = BIG
    specials: tuple = (0.0,)
    numpy_ref: Callable | None = None
    scale: float = 2.0**-10  # magnitude floor of the tolerance (see the test module)
    nonlinear: bool = True  # also tested in float32; affine ops run in the engine's float64
    # static shapes keep ONNX's batch axis as a leading 1 (bounds/graph.py); for ops that care
    # (NCHW pooling) the ONNX model's batch axis is that 1, our sample axis merged into it
    merge_batch: bool = False
    # several dynamic inputs: {position: per-sample shape}; they are drawn as one flat vector
    # (in_shape = (total size,)) cut in order of position, and named "x<pos>" in onnx_inputs
    operands: dict = field(default_factory=dict)
    # ONNX types of the reference model: {dynamic ONNX input name: TensorProto type} to Cast
    # that float input to first (And/Or take bool, Where's condition is bool), and the op's
    # output type when it is not float (0: float), which the model casts back to float
    onnx_cast_in: dict = field(default_factory=dict)
    onnx_out: int = 0

    @property
    def shape(self) -> tuple:
        return self.in_shape if self.out_shape is None else self.out_shape


def _unary(op, label=None, **kw) -> RuleCase:
    return RuleCase(op=op, label=label or op, **kw)


def _gelu_exact(x):
    return x * special.ndtr(x)


def _gelu_tanh(x):
    v = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return x * special.expit(2 * v)


def _swish(a, label):
    a = float(np.float32(a))  # the float32 number onnxruntime multiplies by
    return _unary("Swish", label, attrs={"alpha": a}, onnx_attrs={"alpha": a}, opset=24,
                  specials=(0.0, -1.2785 / a, -2.3994 / a, 2.3994 / a),
                  numpy_ref=lambda x: x * special.expit(a * x))


def _pow(p, domain, label):
    return _unary("Pow", label, attrs={"exponent": p}, domain=domain,
                  onnx_inputs=("x", np.array(p)), specials=(0.0, 1.0),
                  numpy_ref=lambda x: np.power(x, p))


def _elu(a, label):
    # onnxruntime has no double Elu kernel
    return _unary("Elu", label, attrs={"alpha": a}, onnx_attrs={"alpha": a},
                  specials=(0.0, -1.0, 1.0),
                  numpy_ref=lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0))))


def _clip(lo, hi, label):
    ins = ("x", "" if lo is None else np.array(lo), "" if hi is None else np.array(hi))
    return _unary("Clip", label, attrs={"min": lo, "max": hi}, onnx_inputs=ins,
                  numpy_ref=lambda x: np.clip(x, -np.inf if lo is None else lo,
                                              np.inf if hi is None else hi),
                  specials=tuple(v for v in (lo, hi) if v is not None and math.isfinite(v)))


NONLINEAR = [
    _unary("Relu", specials=(0.0,), numpy_ref=lambda x: np.maximum(x, 0.0)),
    _unary("LeakyRelu", attrs={"alpha": 0.1}, onnx_attrs={"alpha": 0.1},
           numpy_ref=lambda x: np.where(x >= 0, x, 0.1 * x)),
    _unary("LeakyRelu", "LeakyRelu(a=2)", attrs={"alpha": 2.0}, onnx_attrs={"alpha": 2.0},
           numpy_ref=lambda x: np.where(x >= 0, x, 2.0 * x)),
    _unary("Abs", numpy_ref=np.abs),
    _unary("Sign", numpy_ref=np.sign),
    _unary("Floor", domain=(-1e3, 1e3), specials=(0.0, 1.0, -2.0, 3.0), numpy_ref=np.floor),
    _unary("Round", domain=(-1e3, 1e3), specials=(0.5, 1.5, -2.5, 3.0), numpy_ref=np.round),
    _clip(-1.0, 2.0, "Clip(-1,2)"),
    _clip(0.5, None, "Clip(0.5,)"),
    _clip(None, -0.25, "Clip(,-0.25)"),
    _unary("Sigmoid", numpy_ref=special.expit),
    _unary("Tanh", numpy_ref=np.tanh),
    _unary("Atan", numpy_ref=np.arctan),
    _unary("Erf", numpy_ref=special.erf),
    _unary("Sin", specials=(0.0, math.pi / 2, math.pi, -math.pi / 2), numpy_ref=np.sin),
    _unary("Cos", specials=(0.0, math.pi / 2, math.pi, -math.pi / 2), numpy_ref=np.cos),
    _unary("Gelu", "Gelu(none)", attrs={"approximate": "none"}, opset=20,
           numpy_ref=_gelu_exact, specials=(0.0, -0.7518, -math.sqrt(2), math.sqrt(2))),
    _unary("Gelu", "Gelu(tanh)", attrs={"approximate": "tanh"},
           onnx_attrs={"approximate": "tanh"}, opset=20, specials=(0.0, -0.75, -1.42, 1.42),
           numpy_ref=_gelu_tanh),
    _swish(1.0, "Swish"),
    _swish(1.702, "Swish(a=1.702)"),
    _swish(0.25, "Swish(a=0.25)"),
    # (ONNX's gate: alpha the float32 1/6 of the op's function body)
    _unary("HardSwish", attrs={"alpha": float(np.float32(1 / 6)), "beta": 0.5}, opset=14,
           specials=(0.0, -3.0, 3.0, -1.5),
           numpy_ref=lambda x: x * np.clip(x * float(np.float32(1 / 6)) + 0.5, 0.0, 1.0)),
    _unary("Mish", opset=18, specials=(0.0, -1.1924, -2.2564, 1.4905),
           numpy_ref=lambda x: x * np.tanh(np.logaddexp(0.0, x))),
    _unary("Exp", domain=(-1e3, 60.0), numpy_ref=np.exp),
    # onnxruntime has no double Softplus kernel
    _unary("Softplus", specials=(0.0, -20.0, 20.0, -40.0),
           numpy_ref=lambda x: np.logaddexp(0.0, x)),
    _elu(1.0, "Elu"),
    _elu(0.3, "Elu(a=0.3)"),
    _elu(2.0, "Elu(a=2)"),  # the largest alpha handled: a concave kink at 0
    _unary("Log", domain=(1e-6, 1e4), specials=(1.0,), numpy_ref=np.log),
    _unary("Sqrt", domain=(0.0, 1e4), specials=(0.0, 1.0), numpy_ref=np.sqrt),
    _unary("Reciprocal", "Reciprocal(+)", domain=(1e-3, 1e3), specials=(1.0,),
           numpy_ref=np.reciprocal),
    _unary("Reciprocal", "Reciprocal(-)", domain=(-1e3, -1e-3), specials=(-1.0,),
           numpy_ref=np.reciprocal),
    _pow(2.0, (-1e3, 1e3), "Pow(2)"),
    _pow(3.0, (-1e3, 1e3), "Pow(3)"),
    _pow(4.0, (-1e2, 1e2), "Pow(4)"),
    _pow(0.0, (-1e2, 1e2), "Pow(0)"),
    _pow(1.0, (-1e2, 1e2), "Pow(1)"),
    _pow(-1.0, (1e-2, 1e3), "Pow(-1,+)"),
    _pow(-1.0, (-1e3, -1e-2), "Pow(-1,-)"),
    _pow(-2.0, (-1e3, -1e-2), "Pow(-2,-)"),
    _pow(0.5, (0.0, 1e4), "Pow(0.5)"),
    _pow(1.5, (0.0, 1e3), "Pow(1.5)"),
    _pow(-0.5, (1e-3, 1e3), "Pow(-0.5)"),
]


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape)


_W, _B = _w(4, 6), _w(4)
_C6 = _w(6)
_NZ6 = np.abs(_w(6)) + 0.5

AFFINE = [
    RuleCase("Linear", "Linear", out_shape=(4,), consts={1: _W, 2: _B}, onnx_op="Gemm",
             onnx_attrs={"transB": 1}, onnx_inputs=("x", _W, _B), domain=(-1e3, 1e3),
             scale=1e4, nonlinear=False),
    RuleCase("Add", "Add(x,c)", consts={1: _C6}, onnx_inputs=("x", _C6), scale=1e4,
             nonlinear=False),
    RuleCase("Sub", "Sub(c,x)", consts={0: _C6}, dyn_pos=1, onnx_inputs=(_C6, "x"),
             scale=1e4, nonlinear=False),
    RuleCase("Mul", "Mul(x,c)", consts={1: _C6}, onnx_inputs=("x", _C6), scale=1e4,
             nonlinear=False),
    RuleCase("Div", "Div(x,c)", consts={1: _NZ6}, onnx_inputs=("x", _NZ6), scale=1e4,
             nonlinear=False),
    RuleCase("Neg", "Neg", nonlinear=False),
    RuleCase("Reshape", "Reshape", in_shape=(2, 3), out_shape=(3, 2),
             onnx_inputs=("x", np.array([-1, 3, 2], dtype=np.int64)), nonlinear=False),
    RuleCase("Transpose", "Transpose", in_shape=(2, 3), out_shape=(3, 2),
             attrs={"perm": (1, 0)}, onnx_attrs={"perm": [0, 2, 1]}, nonlinear=False),
    RuleCase("ReduceSum", "ReduceSum", in_shape=(2, 3), out_shape=(2,),
             attrs={"axes": (1,), "keepdims": False}, onnx_attrs={"keepdims": 0},
             onnx_inputs=("x", np.array([2], dtype=np.int64)), scale=1e4, nonlinear=False),
    RuleCase("ReduceMean", "ReduceMean", in_shape=(2, 3), out_shape=(2, 1),
             attrs={"axes": (1,), "keepdims": True}, onnx_attrs={"keepdims": 1, "axes": [2]},
             scale=1e4, nonlinear=False),
    RuleCase("ReduceMax", "ReduceMax", in_shape=(2, 3), out_shape=(3,),
             attrs={"axes": (0,), "keepdims": False}, onnx_attrs={"keepdims": 0, "axes": [1]},
             nonlinear=False),
    RuleCase("Softmax", "Softmax", in_shape=(2, 3), attrs={"axis": 1},
             onnx_attrs={"axis": 2}, domain=(-30.0, 30.0), nonlinear=False,
             numpy_ref=lambda x: special.softmax(x, axis=2)),
    RuleCase("GlobalAveragePool", "GlobalAveragePool", in_shape=(1, 2, 3, 3),
             out_shape=(1, 2, 1, 1), scale=1e4, nonlinear=False, merge_batch=True,
             numpy_ref=lambda x: x.mean(axis=(3, 4), keepdims=True)),
    RuleCase("Tile", "Tile", in_shape=(2, 3), out_shape=(4, 3), attrs={"repeats": (2, 1)},
             onnx_inputs=("x", np.array([1, 2, 1], dtype=np.int64)), nonlinear=False),
]


# ---------------------------------------------------------------- float64 numpy references for
# ops onnxruntime has no double kernel for (Conv, ConvTranspose, AveragePool, Resize); written
# from the ONNX operator definitions, not from our rules (the onnxruntime float32 test checks them)
def _conv_ref(w, b, strides, pads, dilations, group):
    sp = w.ndim - 2

    def ref(x):
        x = np.pad(x[:, 0], [(0, 0), (0, 0)] + [(pads[i], pads[i + sp]) for i in range(sp)])
        span = [(w.shape[2 + i] - 1) * dilations[i] + 1 for i in range(sp)]
        win = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + sp)))
        win = win[(slice(None),) * 2 + tuple(slice(None, None, s) for s in strides)
                  + tuple(slice(None, None, d) for d in dilations)]
        cg, og = x.shape[1] // group, w.shape[0] // group
        outs = [np.einsum("nchwij,ocij->nohw", win[:, g * cg:(g + 1) * cg],
                          w[g * og:(g + 1) * og]) for g in range(group)]
        return np.concatenate(outs, 1) + b.reshape(1, -1, 1, 1)

    return ref


def _conv_t_ref(w, b, strides, pads, output_padding):
    """2-d, group 1, dilation 1: scatter every input cell through the kernel, then crop."""

    def ref(x):
        x = x[:, 0]
        n, _, h, wd = x.shape
        kh, kw = w.shape[2:]
        full = (n, w.shape[1], (h - 1) * strides[0] + kh + output_padding[0],
                (wd - 1) * strides[1] + kw + output_padding[1])
        out = np.zeros(full)
        for i in range(kh):
            for j in range(kw):
                out[:, :, i:i + (h - 1) * strides[0] + 1:strides[0],
                    j:j + (wd - 1) * strides[1] + 1:strides[1]] += np.einsum(
                        "nchw,co->nohw", x, w[:, :, i, j])
        out = out[:, :, pads[0]:full[2] - pads[2], pads[1]:full[3] - pads[3]]
        return out + b.reshape(1, -1, 1, 1)

    return ref


def _avg_pool_ref(kernel, strides, pads, out_hw, count_include_pad):
    """2-d window means; windows may run past the padding (ceil_mode); cells there never
    count, padded cells count when count_include_pad."""

    def ref(x):
        x = x[:, 0]
        h, wd = x.shape[2:]
        out = np.zeros((*x.shape[:2], *out_hw))
        for oh in range(out_hw[0]):
            for ow in range(out_hw[1]):
                r0, c0 = oh * strides[0] - pads[0], ow * strides[1] - pads[1]
                r1, c1 = r0 + kernel[0], c0 + kernel[1]
                cells = x[:, :, max(r0, 0):min(r1, h), max(c0, 0):min(c1, wd)]
                if count_include_pad:
                    rows = min(r1, h + pads[2]) - max(r0, -pads[0])
                    cols = min(c1, wd + pads[3]) - max(c0, -pads[1])
                else:
                    rows, cols = cells.shape[2], cells.shape[3]
                out[:, :, oh, ow] = cells.sum(axis=(2, 3)) / (rows * cols)
        return out

    return ref


def _resize_nearest_ref(scales, out_shape):
    """ONNX Resize, mode nearest, half_pixel coordinates, round_prefer_floor."""

    def ref(x):
        x = x[:, 0]
        for axis, (scale, size) in enumerate(zip(scales, out_shape, strict=True)):
            src = (np.arange(size) + 0.5) / scale - 0.5
            idx = np.clip(np.ceil(src - 0.5), 0, x.shape[axis + 1] - 1).astype(int)
            x = np.take(x, idx, axis=axis + 1)
        return x

    return ref


_CW, _CB = _w(3, 2, 3, 3), _w(3)
_GW, _GB = _w(4, 2, 2, 2), _w(4)
_TW, _TB = _w(2, 3, 3, 3), _w(3)
_M34, _M43 = _w(3, 4), _w(4, 3)
_C22 = _w(2, 2)
_COND = RNG.random((3, 4)) < 0.5
_C34 = _w(3, 4)
_I64 = np.int64
_POOL = {"kernel_shape": (3, 2), "strides": (2, 2), "pads": (1, 0, 0, 1), "dilations": (1, 1),
         "extra": (1, 0), "count_include_pad": 0}
_ONNX_POOL = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}
_POOL_PAD = {"kernel_shape": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1),
             "dilations": (1, 1), "extra": (0, 0), "count_include_pad": 1}


def _affine(op, label, **kw) -> RuleCase:
    kw.setdefault("scale", 1e4)
    return RuleCase(op, label, nonlinear=False, **kw)


_INF = np.inf
# per leaf and feature: (end, strict) below and above
_TREE_LOWER = np.array([[[-_INF, 0], [-_INF, 0]], [[0.0, 1], [-_INF, 0]],
                        [[-_INF, 0], [-_INF, 0]], [[-_INF, 0], [0.5, 0]]])
_TREE_UPPER = np.array([[[0.0, 0], [_INF, 0]], [[_INF, 0], [_INF, 0]],
                        [[_INF, 0], [0.5, 1]], [[_INF, 0], [_INF, 0]]])
_TREE_VALUES = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25], [2.0, -0.75]], np.float32)
_TREE_OF = np.array([0, 0, 1, 1])


def _tree_leaves_ref(x):
    first = np.where((x[:, 0] <= 0.0)[:, None], _TREE_VALUES[0], _TREE_VALUES[1])
    second = np.where((x[:, 1] < 0.5)[:, None], _TREE_VALUES[2], _TREE_VALUES[3])
    return np.stack([first, second], axis=1).astype(np.float64)


def _dynamic_slice_ref(x):
    """x [N, 7]: the data x[:, :6] read at floor(x[:, 6]) for 3 elements."""
    s = np.floor(x[:, 6]).astype(np.int64)
    return np.stack([x[i, s[i]:s[i] + 3] for i in range(len(x))])


def _scatter_window_ref(x):
    """x [N, 13]: data x[:, :6], updates x[:, 6:12], written where 0 <= q - floor(x[:, 12]) <= 1
    and _SCATTER_MASK[q] (positions past the axis are not written)."""
    q = np.arange(6)
    t = q[None, :] - np.floor(x[:, 12:13])
    return np.where((t >= 0) & (t <= 1) & (_SCATTER_MASK > 0), x[:, 6:12], x[:, :6])



def _reflect(c: np.ndarray, low: float, high: float) -> np.ndarray:
    """c folded into [low, high] by reflections at both ends (ONNX GridSample's padding)."""
    span = high - low
    d = np.where(c < low, low - c, c - high)
    n, r = np.floor(d / span), np.mod(d, span)
    folded = np.where(c < low, np.where(n % 2 == 0, low + r, high - r),
                      np.where(n % 2 == 0, high - r, low + r))
    return np.where((c >= low) & (c <= high), c, folded)


def _grid_sample_ref(mode: str, padding: str, align: bool):
    """x [S, 24]: a 3 x 4 image x[:, :12] read at the 2 x 3 grid x[:, 12:] ((x, y) pairs in
    [-1, 1] spanning the image), written from ONNX GridSample's definition."""
    h, w = 3, 4

    def coord(g, size):
        c = (g + 1) / 2 * (size - 1) if align else ((g + 1) * size - 1) / 2
        if padding == "reflection":
            c = _reflect(c, 0.0, size - 1.0) if align else _reflect(c, -0.5, size - 0.5)
        return np.clip(c, 0, size - 1) if padding != "zeros" else c

    def pixel(img, r, c):
        return img[r, c] if 0 <= r < h and 0 <= c < w else 0.0

    def ref(x):
        data, grid = _cut(x, (12, 12))
        data, grid = data.reshape(-1, h, w), grid.reshape(-1, 2, 3, 2)
        out = np.zeros((len(x), 1, 1, 2, 3))
        for s, i, j in np.ndindex(len(x), 2, 3):
            cx, cy = coord(grid[s, i, j, 0], w), coord(grid[s, i, j, 1], h)
            if mode == "nearest":
                out[s, 0, 0, i, j] = pixel(data[s], int(np.rint(cy)), int(np.rint(cx)))
                continue
            x0, y0 = int(np.floor(cx)), int(np.floor(cy))
            fx, fy = cx - x0, cy - y0
            out[s, 0, 0, i, j] = ((1 - fy) * ((1 - fx) * pixel(data[s], y0, x0)
                                              + fx * pixel(data[s], y0, x0 + 1))
                                  + fy * ((1 - fx) * pixel(data[s], y0 + 1, x0)
                                          + fx * pixel(data[s], y0 + 1, x0 + 1)))
        return out

    return ref


def _grid_sample(mode: str, padding: str, align: int) -> RuleCase:
    # grid values in [-2, 2] reach outside the image on every side
    return RuleCase("GridSample", f"GridSample({mode},{padding},{align})", in_shape=(24,),
                    out_shape=(1, 1, 2, 3), operands={0: (1, 1, 3, 4), 1: (1, 2, 3, 2)},
                    attrs={"mode": mode, "padding_mode": padding, "align_corners": align},
                    onnx_inputs=("x0", "x1"), domain=(-2.0, 2.0), specials=(-1.0, 0.0, 1.0),
                    scale=2.0,  # a weighted sum rounds with its terms' size (|data| <= 2)
                    numpy_ref=_grid_sample_ref(mode, padding, bool(align)))

_SCATTER_MASK = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])

STRUCTURED = [
    _affine("Conv", "Conv(stride,pads)", in_shape=(1, 2, 5, 5), out_shape=(1, 3, 2, 4),
            attrs={"strides": (2, 1), "dilations": (1, 1), "group": 1, "pads": (1, 0, 0, 1)},
            consts={1: _CW, 2: _CB}, domain=(-1e3, 1e3), scale=3e4, merge_batch=True,
            onnx_attrs={"strides": [2, 1], "pads": [1, 0, 0, 1]}, onnx_inputs=("x", _CW, _CB),
            numpy_ref=_conv_ref(_CW, _CB, (2, 1), (1, 0, 0, 1), (1, 1), 1)),
    _affine("Conv", "Conv(group,dilation)", in_shape=(1, 4, 5, 5), out_shape=(1, 4, 3, 3),
            attrs={"strides": (1, 1), "dilations": (2, 2), "group": 2, "pads": (0, 0, 0, 0)},
            consts={1: _GW, 2: _GB}, domain=(-1e3, 1e3), scale=3e4, merge_batch=True,
            onnx_attrs={"dilations": [2, 2], "group": 2}, onnx_inputs=("x", _GW, _GB),
            numpy_ref=_conv_ref(_GW, _GB, (1, 1), (0, 0, 0, 0), (2, 2), 2)),
    _affine("ConvTranspose", "ConvTranspose", in_shape=(1, 2, 3, 3), out_shape=(1, 3, 7, 6),
            attrs={"strides": (2, 2), "dilations": (1, 1), "group": 1, "pads": (1, 0, 0, 1),
                   "output_padding": (1, 0)},
            consts={1: _TW, 2: _TB}, domain=(-1e3, 1e3), scale=3e4, merge_batch=True,
            onnx_attrs={"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 0]},
            onnx_inputs=("x", _TW, _TB),
            numpy_ref=_conv_t_ref(_TW, _TB, (2, 2), (1, 0, 0, 1), (1, 0))),
    _affine("MaxPool", "MaxPool(ceil,pads)", in_shape=(1, 2, 5, 5), out_shape=(1, 2, 3, 3),
            attrs=_POOL, onnx_attrs=_ONNX_POOL, merge_batch=True, scale=2.0**-10),
    _affine("MaxPool", "MaxPool(dilation)", in_shape=(1, 2, 5, 5), out_shape=(1, 2, 3, 3),
            attrs={**_POOL, "kernel_shape": (2, 2), "strides": (1, 1), "pads": (0, 0, 0, 0),
                   "dilations": (2, 2), "extra": (0, 0)},
            onnx_attrs={"kernel_shape": [2, 2], "dilations": [2, 2]}, merge_batch=True,
            scale=2.0**-10),
    _affine("AveragePool", "AveragePool(ceil,pads)", in_shape=(1, 2, 5, 5),
            out_shape=(1, 2, 3, 3), attrs=_POOL, onnx_attrs=_ONNX_POOL, merge_batch=True,
            numpy_ref=_avg_pool_ref((3, 2), (2, 2), (1, 0, 0, 1), (3, 3), False)),
    _affine("AveragePool", "AveragePool(count_pad)", in_shape=(1, 2, 5, 5),
            out_shape=(1, 2, 5, 5), attrs=_POOL_PAD, merge_batch=True,
            onnx_attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
            numpy_ref=_avg_pool_ref((3, 3), (1, 1), (1, 1, 1, 1), (5, 5), True)),
    _affine("MatMul", "MatMul(x,c)", in_shape=(2, 3), out_shape=(2, 4), consts={1: _M34},
            onnx_inputs=("x", _M34), domain=(-1e3, 1e3)),
    _affine("MatMul", "MatMul(c,x)", in_shape=(3, 2), out_shape=(4, 2), consts={0: _M43},
            dyn_pos=1, onnx_inputs=(_M43, "x"), domain=(-1e3, 1e3)),
    _affine("MatMul", "MatMul(x,y)", in_shape=(18,), out_shape=(2, 4),
            operands={0: (2, 3), 1: (3, 4)}, onnx_inputs=("x0", "x1"), domain=(-1e2, 1e2),
            scale=1e5),
    _affine("Concat", "Concat(x,c)", in_shape=(2, 3), out_shape=(2, 5), attrs={"axis": 1},
            consts={1: _C22}, onnx_attrs={"axis": 2}, onnx_inputs=("x", PerSample(_C22)),
            numpy_ref=lambda x: np.concatenate([x, np.broadcast_to(_C22, (len(x), 2, 2))], 2)),
    _affine("Concat", "Concat(x,y)", in_shape=(12,), out_shape=(5, 2), attrs={"axis": 0},
            operands={0: (2, 2), 1: (3, 2)}, onnx_attrs={"axis": 1}, onnx_inputs=("x0", "x1")),
    _affine("Slice", "Slice(steps)", in_shape=(4, 6), out_shape=(2, 3),
            attrs={"axes": (0, 1), "starts": (0, 5), "ends": (4, -1), "steps": (2, -2)},
            onnx_inputs=("x", np.array([0, 5], _I64), np.array([4, -100], _I64),
                         np.array([1, 2], _I64), np.array([2, -2], _I64))),
    _affine("Gather", "Gather", in_shape=(4, 6), out_shape=(4, 2, 2), attrs={"axis": 1},
            consts={1: np.array([[0, 3], [5, 5]], _I64)}, onnx_attrs={"axis": 2},
            onnx_inputs=("x", np.array([[0, 3], [5, 5]], _I64))),
    _affine("Pad", "Pad(constant)", in_shape=(3, 4), out_shape=(6, 6),
            attrs={"pads": (1, 0, 2, 2), "mode": "constant", "value": 1.5},
            onnx_attrs={"mode": "constant"},
            onnx_inputs=("x", np.array([0, 1, 0, 0, 2, 2], _I64), np.array(1.5))),
    _affine("Pad", "Pad(reflect)", in_shape=(3, 4), out_shape=(6, 6),
            attrs={"pads": (1, 0, 2, 2), "mode": "reflect", "value": 0.0},
            onnx_attrs={"mode": "reflect"},
            onnx_inputs=("x", np.array([0, 1, 0, 0, 2, 2], _I64))),
    _affine("Pad", "Pad(wrap)", in_shape=(3, 4), out_shape=(6, 9),
            attrs={"pads": (1, 0, 2, 5), "mode": "wrap", "value": 0.0},
            onnx_attrs={"mode": "wrap"}, opset=19,
            onnx_inputs=("x", np.array([0, 1, 0, 0, 2, 5], _I64))),
    _affine("Pad", "Pad(edge)", in_shape=(3, 4), out_shape=(5, 7),
            attrs={"pads": (0, 2, 2, 1), "mode": "edge", "value": 0.0},
            onnx_attrs={"mode": "edge"},
            onnx_inputs=("x", np.array([0, 0, 2, 0, 2, 1], _I64))),
    _affine("Expand", "Expand", in_shape=(3, 1), out_shape=(3, 4),
            onnx_inputs=("x", np.array([3, 4], _I64))),
    _affine("Where", "Where(c,x,c)", in_shape=(3, 4), consts={0: _COND, 2: _C34}, dyn_pos=1,
            onnx_inputs=(_COND, "x", _C34)),
    _affine("Where", "Where(c,x,y)", in_shape=(24,), out_shape=(3, 4), consts={0: _COND},
            operands={1: (3, 4), 2: (3, 4)}, onnx_inputs=(_COND, "x1", "x2")),
    _affine("Resize", "Resize(nearest)", in_shape=(1, 2, 3, 3), out_shape=(1, 2, 6, 4),
            attrs={"indices": (None, None, (0, 0, 1, 1, 2, 2), (0, 0, 1, 2))},
            onnx_attrs={"mode": "nearest"}, merge_batch=True,
            onnx_inputs=("x", "", np.array([1.0, 1.0, 2.0, 1.5], np.float32)),
            numpy_ref=_resize_nearest_ref((1.0, 2.0, 1.5), (2, 6, 4))),
    # data x[:6] read at floor(x[6]) for 3 elements; ends = starts + 3 has no one-node ONNX
    # form, so tests/onnx_import/test_dynamic_slice.py checks the semantics in onnxruntime
    RuleCase("DynamicSlice", "DynamicSlice(k=3)", in_shape=(7,), out_shape=(3,),
             operands={0: (6,), 1: (1,)}, attrs={"axes": (0,), "lengths": (3,)},
             onnx_inputs=("x0", "x1"), domain=(0.0, 3.99), specials=(1.0, 2.0, 3.0),
             numpy_ref=_dynamic_slice_ref),
    # two trees on 2 features (x0 <= 0 | x0 > 0; x1 < 0.5 | x1 >= 0.5), 2 outputs per leaf: no
    # one-node ONNX form here (tests/onnx_import/test_tree_ensembles.py checks the ensembles)
    RuleCase("TreeLeaves", "TreeLeaves(2 trees)", in_shape=(2,), out_shape=(2, 2),
             consts={1: _TREE_LOWER, 2: _TREE_UPPER, 3: _TREE_VALUES, 4: _TREE_OF},
             domain=(-1.0, 1.0), specials=(0.0, 0.5), numpy_ref=_tree_leaves_ref),
    # x with an error allowance sized by s: no ONNX form (the importer writes it for a
    # LayerNormalization's variance; tests/onnx_import checks those models in onnxruntime)
    RuleCase("Slack", "Slack(x,s)", in_shape=(12,), out_shape=(6,), operands={0: (6,), 1: (6,)},
             attrs={"relative": 2.0**-10}, onnx_inputs=("x0", "x1"), nonlinear=False,
             numpy_ref=lambda x: _cut(x, (6, 6))[0].astype(np.float64)),
    # v, floored by the least variance over x's box: no ONNX form (the IR pass puts it on a
    # variance; tests/bounds/test_centred_variance.py checks the floor in onnxruntime)
    RuleCase("CentredVariance", "CentredVariance(v,x)", in_shape=(9,), out_shape=(1, 1),
             operands={0: (1, 1), 1: (1, 8)}, attrs={"axes": (1,)}, onnx_inputs=("x0", "x1"),
             nonlinear=False, numpy_ref=lambda x: _cut(x, (1, 8))[0].reshape(
                 -1, 1, 1).astype(np.float64)),
    # x[:6] with x[6:12] written at window floor(x[12]) + 0..1 (clamped to the axis), inside a
    # constant mask; the ONNX form (ScatterND of sliced Range indices) needs several nodes, so
    # tests/onnx_import/test_scatter_window.py checks the semantics in onnxruntime
    RuleCase("ScatterWindow", "ScatterWindow(2 of 6)", in_shape=(13,), out_shape=(6,),
             operands={0: (6,), 1: (6,), 2: (1,)}, consts={3: _SCATTER_MASK},
             attrs={"axes": (0,), "first": (0,), "last": (1,)},
             onnx_inputs=("x0", "x1", "x2", _SCATTER_MASK), domain=(0.0, 5.99),
             specials=(1.0, 2.0, 3.0, 4.0, 5.0), numpy_ref=_scatter_window_ref),
    # an image read at an input-dependent grid; its one-node ONNX form takes the grid with
    # ONNX's batch axis, which the harness's operands lack, so tests/onnx_import/
    # test_grid_sample.py checks the semantics in onnxruntime
    _grid_sample("linear", "zeros", 0),
    _grid_sample("linear", "border", 1),
    _grid_sample("linear", "reflection", 0),
    _grid_sample("nearest", "zeros", 1),
    _grid_sample("nearest", "reflection", 1),
]

# ---------------------------------------------------------------- piecewise-constant ops: the
# references are numpy (the harness reads floats), checked against onnxruntime in float32 on
# reference models with the ops' real types: bool/int outputs (onnx_out) cast back to float,
# float operands cast to bool where the op takes bool (onnx_cast_in, x != 0 as in the IR)
_BOOL, _INT64 = TensorProto.BOOL, TensorProto.INT64
_INTS6 = np.array([0.0, 1.0, -2.0, 3.0, 0.0, 1.0])


def _cut(x, sizes):
    """Split flat samples [N, sum(sizes)] into operands (the harness draws them as one)."""
    return np.split(x, np.cumsum(sizes)[:-1], axis=1)


def _pair(fn):
    return lambda x: fn(*_cut(x, (6, 6))).astype(np.float64)


def _step(op, label, **kw) -> RuleCase:
    kw.setdefault("onnx_out", _BOOL)
    kw.setdefault("domain", (-4.0, 4.0))
    kw.setdefault("specials", (0.0, 1.0, -2.0, 3.0))
    return RuleCase(op, label, **kw)


def _two(op, label, fn, **kw) -> RuleCase:
    return _step(op, label, in_shape=(12,), out_shape=(6,), operands={0: (6,), 1: (6,)},
                 onnx_inputs=("x0", "x1"), numpy_ref=_pair(fn), **kw)


def _argmax_ref(axis, keepdims, last):
    def ref(x):
        ax = axis + 1
        idx = (x.shape[ax] - 1 - np.argmax(np.flip(x, ax), ax)) if last else np.argmax(x, ax)
        return np.expand_dims(idx, ax).astype(np.float64) if keepdims else idx.astype(np.float64)

    return ref


def _pair_argmax_ref(n, order, last, rows):
    """PairArgMax's value, with the pair axis first in the sample: the first (last) index
    of smallest shortfall s_k = max_{i != k} b(i, k), b(i, k) = y_i - y_k = -D_q (i < k) or
    D_q (i > k) for the pair q of (min, max). On consistent D (differences of one y) this is
    ArgMax of y, ties included."""
    pair_of = {pair: q for q, pair in enumerate((i, j) for i in range(n)
                                                 for j in range(i + 1, n))}

    def ref(x):
        d = np.moveaxis(x, 1, -1)[:, rows, :]
        s = np.stack([np.max([-d[..., pair_of[(i, k)]] if i < k else d[..., pair_of[(k, i)]]
                              for i in range(n) if i != k], 0) for k in range(n)], -1)
        s = s[..., list(order)]
        best = s == s.min(-1, keepdims=True)
        if last:
            return (n - 1 - np.argmax(best[..., ::-1], -1)).astype(np.float64)
        return np.argmax(best, -1).astype(np.float64)

    return ref


def _onehot_ref(depth, on, off):
    def ref(x):
        idx = np.trunc(x)
        idx = np.where(idx < 0, idx + depth, idx)
        return np.where(idx[..., None] == np.arange(depth), on, off)

    return ref


def _cast_int_ref(low, high):
    """Out-of-range casts are unspecified in ONNX; onnxruntime (x86) was seen to give int32's
    minimum past int32's range and to wrap narrower types around: -300 -> int8 -44."""
    def ref(x):
        t = np.trunc(x)
        t = np.where((t < -2.0**31) | (t >= 2.0**31), -2.0**31, t)
        return np.mod(t - low, high - low + 1) + low

    return ref


DISCRETE = [
    _step("Equal", "Equal(x,c)", consts={1: _INTS6}, onnx_inputs=("x", _INTS6),
          numpy_ref=lambda x: (x == _INTS6).astype(np.float64)),
    _two("Equal", "Equal(x,y)", np.equal),
    _two("Greater", "Greater(x,y)", np.greater),
    _step("Greater", "Greater(c,x)", consts={0: _INTS6}, dyn_pos=1, onnx_inputs=(_INTS6, "x"),
          numpy_ref=lambda x: (_INTS6 > x).astype(np.float64)),
    _two("GreaterOrEqual", "GreaterOrEqual(x,y)", np.greater_equal),
    _step("IsNaN", "IsNaN(x)", numpy_ref=lambda x: np.isnan(x).astype(np.float64)),
    _step("IsInf", "IsInf(x)", numpy_ref=lambda x: np.isinf(x).astype(np.float64),
          attrs={"detect_negative": 1, "detect_positive": 1},
          onnx_attrs={"detect_negative": 1, "detect_positive": 1}),
    _two("And", "And(x,y)", lambda a, b: (a != 0) & (b != 0),
         onnx_cast_in={"x0": _BOOL, "x1": _BOOL}),
    _two("Or", "Or(x,y)", lambda a, b: (a != 0) | (b != 0),
         onnx_cast_in={"x0": _BOOL, "x1": _BOOL}),
    _step("Select", "Select(c,x,y)", in_shape=(18,), out_shape=(6,),
          operands={0: (6,), 1: (6,), 2: (6,)}, onnx_op="Where",
          onnx_inputs=("x0", "x1", "x2"), domain=(-1.0, 1.0), specials=(0.0,),
          onnx_cast_in={"x0": _BOOL}, onnx_out=0,
          numpy_ref=lambda x: np.where(_cut(x, (6, 6, 6))[0] != 0, *_cut(x, (6, 6, 6))[1:])),
    _step("Select", "Select(c,x,const)", in_shape=(12,), out_shape=(6,),
          operands={0: (6,), 1: (6,)}, consts={2: _INTS6}, onnx_op="Where",
          onnx_inputs=("x0", "x1", _INTS6), specials=(0.0,),
          onnx_cast_in={"x0": _BOOL}, onnx_out=0,
          numpy_ref=lambda x: np.where(_cut(x, (6, 6))[0] != 0, _cut(x, (6, 6))[1], _INTS6)),
    _step("Cast", "Cast(int32)",
          attrs={"to": "int", "min": -2.0**31, "max": 2.0**31 - 1, "via": 32},
          onnx_attrs={"to": TensorProto.INT32}, onnx_out=TensorProto.INT32, domain=(-1e4, 1e4),
          numpy_ref=_cast_int_ref(-2.0**31, 2.0**31 - 1)),
    _step("Cast", "Cast(int8, out of range)",
          attrs={"to": "int", "min": -128.0, "max": 127.0, "via": 32},
          onnx_attrs={"to": TensorProto.INT8}, onnx_out=TensorProto.INT8,
          domain=(-300.0, 300.0),
          specials=(0.0, 127.0, 128.0, -128.0, -129.0), numpy_ref=_cast_int_ref(-128.0, 127.0)),
    _step("Cast", "Cast(bool)", attrs={"to": "bool"}, onnx_attrs={"to": TensorProto.BOOL},
          numpy_ref=lambda x: (x != 0).astype(np.float64)),
    _step("Cast", "Cast(float16)", attrs={"to": "float16"},
          onnx_attrs={"to": TensorProto.FLOAT16}, onnx_out=TensorProto.FLOAT16,
          domain=(-6.5e4, 6.5e4),
          specials=(0.0, 1.0, 2049.0, 65504.0),
          # the network rounds its float32 value (a float64 point stands for float32(point))
          numpy_ref=lambda x: x.astype(np.float32).astype(np.float16).astype(np.float64)),
    _step("ArgMax", "ArgMax(axis 1)", in_shape=(3, 4), out_shape=(3,),
          attrs={"axis": 1, "keepdims": 0, "last": 0}, onnx_attrs={"axis": 2, "keepdims": 0},
          onnx_out=_INT64,
          numpy_ref=_argmax_ref(1, False, False)),
    _step("ArgMax", "ArgMax(axis 0, keepdims, last)", in_shape=(3, 4), out_shape=(1, 4),
          attrs={"axis": 0, "keepdims": 1, "last": 1}, domain=(-1.0, 1.0), specials=(0.0,),
          onnx_attrs={"axis": 1, "keepdims": 1, "select_last_index": 1}, onnx_out=_INT64,
          numpy_ref=_argmax_ref(0, True, True)),
    # an IR op of the ArgMax rewrite (bounds/rules/argmax_pairs.py), no ONNX form of its own:
    # tests/bounds/test_argmax_pairs.py checks the rewritten graphs against onnxruntime
    _step("PairArgMax", "PairArgMax(3 classes, 2 positions)", in_shape=(3, 2), out_shape=(2,),
          attrs={"n": 3, "order": (1, 2, 0), "margin": 0.0, "last": 0, "pair_axis": 0},
          consts={1: np.array([1, 0], np.int64)}, onnx_inputs=("x",),
          numpy_ref=_pair_argmax_ref(3, (1, 2, 0), False, np.array([1, 0]))),
    _step("PairArgMax", "PairArgMax(2 classes, last, margin)", in_shape=(1, 3),
          out_shape=(3,), attrs={"n": 2, "order": (0, 1), "margin": 0.25, "last": 1,
                                 "pair_axis": 0},
          consts={1: np.array([2, 0, 1], np.int64)}, onnx_inputs=("x",),
          numpy_ref=_pair_argmax_ref(2, (0, 1), True, np.array([2, 0, 1]))),
    _step("OneHot", "OneHot(depth 3)", in_shape=(4,), out_shape=(4, 3),
          attrs={"depth": 3, "axis": 1, "on": 5.0, "off": -1.0}, domain=(-4.5, 4.5),
          specials=(0.0, 1.0, 2.0, -1.0, -3.0, 3.0),
          # float depth: onnxruntime 1.32 has OneHot kernels for (float indices, float
          # values) with a float depth, none with an int64 one (NOT_IMPLEMENTED)
          onnx_inputs=("x", np.array(3.0), np.array([-1.0, 5.0])), onnx_out=0,
          numpy_ref=_onehot_ref(3, 5.0, -1.0)),
]

CASES: list[RuleCase] = NONLINEAR + AFFINE + STRUCTURED + DISCRETE

# Soundness failures known and not fixed yet: (case label, check, dtype name) -> why. A listed
# check is a strict xfail: it must fail (a fix that makes it pass fails until it is removed).
# Emptied in session 8: Relu's float32 upper offset is rounded outward (bounds/rules/relu.py),
# and Gelu(tanh) is checked against the engine's own allowance, which has the eps |x| term.
KNOWN_ISSUES: dict[tuple[str, str, str], str] = {}
