"""onnxruntime's contrib operators (domain ``com.microsoft``) that its graph optimizer writes
into a saved model (``SessionOptions.optimized_model_filepath`` at the basic or extended
level: a deployment step), each rewritten into the standard ops it fuses and converted by
their converters: FusedConv and FusedGemm (a Conv or Gemm and its activation), FusedMatMul,
QuickGelu, Gelu, FastGelu, BiasGelu and SkipLayerNormalization. The layout ops of the
highest level (domain ``com.microsoft.nchwc``) are machine-specific and refused by name.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.composite import swish_of
from verifier.onnx_import.registry import MS_DOMAIN, converter, find_converter

# The opset whose forms the rewritten nodes take (Clip's bounds as inputs, Gelu, the
# LayerNormalization operator).
_FORM_OPSET = 20


def _standard(ctx: ConvertContext, node, op: str, inputs: list, n_out: int = 1, **attrs
              ) -> list:
    """The values of a standard ``op`` node (opset 20 form) on ``inputs`` (values or None),
    converted by its own converter; temporary names are dropped afterwards."""
    stem = f"{node.output[0]}::{op}"
    names = []
    for k, value in enumerate(inputs):
        if value is None:
            names.append("")
            continue
        names.append(f"{stem}:in{k}")
        ctx.bind(names[-1], value)
    outputs = [f"{stem}:out{k}" for k in range(n_out)]
    rewritten = helper.make_node(op, names, outputs, name=node.name, **attrs)
    opset, ctx.opset = ctx.opset, _FORM_OPSET
    try:
        find_converter(op, _FORM_OPSET, node.name or node.op_type)(ctx, rewritten)
    finally:
        ctx.opset = opset
    results = [ctx.value(o) if o in ctx.values else None for o in outputs]
    for name in names + outputs:
        ctx.values.pop(name, None)
    return results


def _activation(ctx: ConvertContext, node, y: Dyn, kind: str | None, params: list[float]):
    """``y`` through the fused activation ``kind`` (None: the identity)."""
    if kind is None or kind == "":
        return y
    if kind in ("Relu", "Tanh", "Sigmoid"):
        return _standard(ctx, node, kind, [y])[0]
    if kind == "LeakyRelu":
        return _standard(ctx, node, kind, [y], alpha=params[0])[0]
    if kind == "HardSigmoid":
        return _standard(ctx, node, kind, [y], alpha=params[0], beta=params[1])[0]
    if kind == "Clip":
        low, high = (np.asarray(p, dtype=np.float32) for p in params[:2])
        return _standard(ctx, node, kind, [y, low, high])[0]
    raise unsupported(node, f"the fused activation {kind!r}")


def _attrs(ctx: ConvertContext, node, names: tuple[str, ...]) -> dict:
    return {k: v for k in names if (v := ctx.attr(node, k)) is not None}


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@converter(f"{MS_DOMAIN}.FusedConv", 1)
def fused_conv(ctx: ConvertContext, node) -> None:
    """act(Conv(X, W, B) + Z), Z optional (onnxruntime's CPU kernel adds it before the
    activation); ``activation_params``: LeakyRelu's alpha, Clip's min and max, HardSigmoid's
    alpha and beta."""
    inputs = [ctx.optional(node, k) for k in range(3)]
    y = _standard(ctx, node, "Conv", inputs, **_attrs(ctx, node, _CONV_ATTRS))[0]
    z = ctx.optional(node, 3)
    if z is not None:
        y = _standard(ctx, node, "Add", [y, z])[0]
    params = [float(p) for p in ctx.attr(node, "activation_params", []) or []]
    ctx.bind(node.output[0], _activation(ctx, node, y, ctx.attr(node, "activation"), params))


@converter(f"{MS_DOMAIN}.FusedGemm", 1)
def fused_gemm(ctx: ConvertContext, node) -> None:
    """act(Gemm(A, B, C)); the activation's alpha and beta (LeakyRelu, HardSigmoid) are
    ``activation_alpha`` and ``activation_beta``."""
    inputs = [ctx.optional(node, k) for k in range(3)]
    y = _standard(ctx, node, "Gemm", inputs,
                  **_attrs(ctx, node, ("alpha", "beta", "transA", "transB")))[0]
    kind = ctx.attr(node, "activation")
    needed = {"LeakyRelu": ("activation_alpha",),
              "HardSigmoid": ("activation_alpha", "activation_beta")}.get(kind, ())
    missing = [name for name in needed if ctx.attr(node, name) is None]
    if missing:  # (onnxruntime refuses such a node too)
        raise ModelError(f"FusedGemm node {node.name!r}: activation {kind} without {missing}")
    params = [float(ctx.attr(node, name)) for name in needed]
    ctx.bind(node.output[0], _activation(ctx, node, y, kind, params))


def _swap_last(ctx: ConvertContext, node, x):
    rank = len(x.shape) if isinstance(x, Dyn) else np.ndim(x)
    if rank < 2:
        raise unsupported(node, "a transposed operand of rank below 2")
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    if not isinstance(x, Dyn):
        return np.transpose(np.asarray(x), perm)
    return _standard(ctx, node, "Transpose", [x], perm=perm)[0]


@converter(f"{MS_DOMAIN}.FusedMatMul", 1)
def fused_matmul(ctx: ConvertContext, node) -> None:
    """alpha * (A or A's last two axes swapped) (B or swapped), as MatMul then Mul."""
    if ctx.attr(node, "transBatchA", 0) or ctx.attr(node, "transBatchB", 0):
        raise unsupported(node, "transBatchA or transBatchB")
    a, b = ctx.value(node.input[0]), ctx.value(node.input[1])
    a = _swap_last(ctx, node, a) if ctx.attr(node, "transA", 0) else a
    b = _swap_last(ctx, node, b) if ctx.attr(node, "transB", 0) else b
    y = _standard(ctx, node, "MatMul", [a, b])[0]
    alpha = float(ctx.attr(node, "alpha", 1.0))
    if alpha != 1.0:
        y = _standard(ctx, node, "Mul", [y, np.float32(alpha)])[0]
    ctx.bind(node.output[0], y)


@converter(f"{MS_DOMAIN}.QuickGelu", 1)
def quick_gelu(ctx: ConvertContext, node) -> None:
    """x sigmoid(alpha x), alpha 1.702 by default: a Swish."""
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], swish_of(ctx, x, ctx.attr(node, "alpha", 1.702)))


def _biased(ctx: ConvertContext, node, pos: int = 1):
    x, bias = ctx.value(node.input[0]), ctx.optional(node, pos)
    return x if bias is None else _standard(ctx, node, "Add", [x, bias])[0]


@converter(f"{MS_DOMAIN}.Gelu", 1)
def gelu(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], _standard(ctx, node, "Gelu", [ctx.value(node.input[0])])[0])


@converter(f"{MS_DOMAIN}.BiasGelu", 1)
def bias_gelu(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], _standard(ctx, node, "Gelu", [_biased(ctx, node)])[0])


@converter(f"{MS_DOMAIN}.FastGelu", 1)
def fast_gelu(ctx: ConvertContext, node) -> None:
    """Gelu's tanh form of x (+ bias)."""
    y = _standard(ctx, node, "Gelu", [_biased(ctx, node)], approximate="tanh")[0]
    ctx.bind(node.output[0], y)


@converter(f"{MS_DOMAIN}.SkipLayerNormalization", 1)
def skip_layer_normalization(ctx: ConvertContext, node) -> None:
    """LayerNormalization over the last axis of input + skip (+ bias, input 4), with gamma
    and beta (input 3, optional); outputs 1 and 2 (mean, inverse std) and 3 (the sum)."""
    total = _standard(ctx, node, "Add", [ctx.value(node.input[0]), ctx.value(node.input[1])])[0]
    bias = ctx.optional(node, 4)
    if bias is not None:
        total = _standard(ctx, node, "Add", [total, bias])[0]
    wanted = [k < len(node.output) and bool(node.output[k]) for k in range(4)]
    outs = _standard(ctx, node, "LayerNormalization",
                     [total, ctx.value(node.input[2]), ctx.optional(node, 3)], n_out=3,
                     axis=-1, epsilon=float(ctx.attr(node, "epsilon", 1e-12)))
    for k, value in enumerate([*outs, total]):
        if wanted[k]:
            ctx.bind(node.output[k], value)
