"""Ops imported as compositions of IR ops the engines already bound: HardSigmoid,
PRelu, Softsign, Selu, Celu, Swish (alpha <= 0; a Swish node otherwise), Ceil, Mod,
LogSoftmax, ThresholdedRelu, Shrink; ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare,
ReduceLogSumExp, LpPool, GlobalLpPool (p = 1, 2); LayerNormalization, InstanceNormalization,
MeanVarianceNormalization, LRN.

Each composition equals the op over the reals, so the bounds of its pieces bound the op, and
each piece carries its own float32 rounding allowance (``bounds.engine.rounding``). The
pieces follow the order in which onnxruntime's kernels compute (max-shifted exponentials for
LogSoftmax and ReduceLogSumExp; mean and mean of squares for the normalisations, the variance
as their difference), so its roundings are the ones the allowances cover; where a kernel
rounds a step more or less (a division for a reciprocal and product), the generic allowance
of the transcendental piece next to it (2**-19 relative) dominates a few ulps.

Where a composition needs a guard that is the identity on every value the runtime can produce
without a NaN (the Relu before a square root), the guard keeps the engines' domains: a
variance whose interval dips below zero only by loose bounds or allowances. Bounds are looser
than a dedicated rule's would be (a normalisation multiplies two input-dependent values);
they are sound, and the attack sees the model as onnxruntime runs it.
"""

from __future__ import annotations

import math

import numpy as np

from bounds.rules.elu import alpha_problem
from bounds.rules.floors import running_sum_slack, variance_slack
from verifier.onnx_import.context import ConvertContext, Dyn, normalize_axis, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.converters.pooling import reduce_axes, reduced_shape
from verifier.onnx_import.converters.shape import emit_slice, reshape_value
from verifier.onnx_import.registry import converter


def _unary(ctx: ConvertContext, op: str, x: Dyn, attrs: dict | None = None) -> Dyn:
    return ctx.emit(op, [x], x.shape, attrs)


def _f32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def hard_sigmoid_of(ctx: ConvertContext, x: Dyn, alpha: float, beta: float) -> Dyn:
    """max(0, min(1, alpha x + beta))."""
    affine = emit_broadcast(ctx, "Add", [emit_broadcast(ctx, "Mul", [x, _f32(alpha)]),
                                         _f32(beta)])
    return _unary(ctx, "Clip", affine, {"min": 0.0, "max": 1.0})


@converter("HardSigmoid", 1)
def hard_sigmoid(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], hard_sigmoid_of(ctx, x, float(ctx.attr(node, "alpha", 0.2)),
                                           float(ctx.attr(node, "beta", 0.5))))


converter("HardSigmoid", 6)(hard_sigmoid)


@converter("HardSwish", 14)
def hard_swish(ctx: ConvertContext, node) -> None:
    """x HardSigmoid(x) with alpha 1/6 (float32, as the op's function body), beta 1/2: one
    node (``bounds.rules.hard_swish``)."""
    x = ctx.value(node.input[0])
    attrs = {"alpha": float(np.float32(1.0 / 6.0)), "beta": 0.5}
    ctx.bind(node.output[0], _unary(ctx, "HardSwish", x, attrs))


@converter("PRelu", 1)
def prelu(ctx: ConvertContext, node) -> None:
    """LeakyRelu where the slope is one number; per-channel slopes s: s x + (1 - s) Relu(x),
    one Relu per element (as tight as LeakyRelu's planes, scaled). The float32 constant
    1 - s may differ from the real one by half an ulp of it, which the Mul and Add
    allowances (2**-23 of each term) cover."""
    x, slope = ctx.value(node.input[0]), ctx.value(node.input[1])
    if isinstance(slope, Dyn):
        raise unsupported(node, "an input-dependent slope")
    slope = np.asarray(slope, dtype=np.float64)
    values = np.unique(slope)
    if values.size == 1:
        ctx.bind(node.output[0], _unary(ctx, "LeakyRelu", x, {"alpha": float(values[0])}))
        return
    linear = emit_broadcast(ctx, "Mul", [x, _f32(slope)])
    kept = emit_broadcast(ctx, "Mul", [_unary(ctx, "Relu", x), _f32(1.0 - slope)])
    ctx.bind(node.output[0], emit_broadcast(ctx, "Add", [linear, kept]))


for _version in (6, 7, 9, 16):
    converter("PRelu", _version)(prelu)


def softsign_of(ctx: ConvertContext, x: Dyn) -> Dyn:
    """x / (1 + |x|) as x Reciprocal(1 + |x|)."""
    denominator = emit_broadcast(ctx, "Add", [_unary(ctx, "Abs", x), _f32(1.0)])
    return emit_broadcast(ctx, "Mul", [x, _unary(ctx, "Reciprocal", denominator)])


@converter("Softsign", 1)
def softsign(ctx: ConvertContext, node) -> None:
    ctx.bind(node.output[0], softsign_of(ctx, ctx.value(node.input[0])))


def elu_of(ctx: ConvertContext, node, x: Dyn, alpha: float) -> Dyn:
    problem = alpha_problem(alpha)
    if problem:
        raise unsupported(node, problem)
    return _unary(ctx, "Elu", x, {"alpha": alpha})


@converter("Selu", 1)
def selu(ctx: ConvertContext, node) -> None:
    """gamma Elu(x; alpha)."""
    x = ctx.value(node.input[0])
    alpha = float(ctx.attr(node, "alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr(node, "gamma", 1.05070102214813232421875))
    ctx.bind(node.output[0], emit_broadcast(ctx, "Mul", [elu_of(ctx, node, x, alpha),
                                                         _f32(gamma)]))


converter("Selu", 6)(selu)


@converter("Celu", 12)
def celu(ctx: ConvertContext, node) -> None:
    """alpha Elu(x / alpha; 1)."""
    x = ctx.value(node.input[0])
    alpha = float(ctx.attr(node, "alpha", 1.0))
    if not alpha > 0:
        raise unsupported(node, f"alpha={alpha!r} (Celu needs alpha > 0)")
    if alpha == 1.0:
        ctx.bind(node.output[0], elu_of(ctx, node, x, 1.0))
        return
    inner = elu_of(ctx, node, emit_broadcast(ctx, "Div", [x, _f32(alpha)]), 1.0)
    ctx.bind(node.output[0], emit_broadcast(ctx, "Mul", [inner, _f32(alpha)]))


def swish_of(ctx: ConvertContext, x: Dyn, alpha: float) -> Dyn:
    """x sigmoid(alpha x), alpha a float32 number: the IR's Swish for alpha > 0 (one curve),
    else the product itself (alpha <= 0 bends the other way: not the Swish rule's shape)."""
    alpha = float(np.float32(alpha))
    if alpha > 0 and math.isfinite(alpha):
        return _unary(ctx, "Swish", x, {"alpha": alpha})
    gate = _unary(ctx, "Sigmoid", emit_broadcast(ctx, "Mul", [x, _f32(alpha)]))
    return emit_broadcast(ctx, "Mul", [x, gate])


@converter("Swish", 24)
def swish(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], swish_of(ctx, x, ctx.attr(node, "alpha", 1.0)))


@converter("Mish", 18)
def mish(ctx: ConvertContext, node) -> None:
    """x tanh(softplus(x)): one node (``bounds.rules.mish``)."""
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], _unary(ctx, "Mish", x))


@converter("Ceil", 1)
def ceil(ctx: ConvertContext, node) -> None:
    """-floor(-x), exact in float32 too."""
    x = ctx.value(node.input[0])
    ctx.bind(node.output[0], _unary(ctx, "Neg", _unary(ctx, "Floor", _unary(ctx, "Neg", x))))


converter("Ceil", 6)(ceil)
converter("Ceil", 13)(ceil)


@converter("Mod", 10)
def mod(ctx: ConvertContext, node) -> None:
    """x mod d for a constant nonzero divisor d: x - d q with q = trunc(x / d) (fmod = 1, the
    sign of x: C's fmod, which onnxruntime computes exactly) or floor(x / d) (fmod = 0, the
    sign of d: integers). trunc(y) = floor(relu(y)) - floor(relu(-y)): steps and kinks that
    have rules, no product of two input-dependent values."""
    x, d = ctx.value(node.input[0]), ctx.value(node.input[1])
    if isinstance(d, Dyn):
        raise unsupported(node, "an input-dependent divisor")
    d = np.asarray(d, dtype=np.float64)
    if not np.all(np.isfinite(d)) or np.any(d == 0):
        raise unsupported(node, "a zero or non-finite divisor (the result is NaN or x)")
    if not isinstance(x, Dyn):
        raise unsupported(node, "a constant dividend")  # (folded before conversion)
    ratio = emit_broadcast(ctx, "Div", [x, _f32(d)])
    if int(ctx.attr(node, "fmod", 0)):
        up = _unary(ctx, "Floor", _unary(ctx, "Relu", ratio))
        down = _unary(ctx, "Floor", _unary(ctx, "Relu", _unary(ctx, "Neg", ratio)))
        quotient = emit_broadcast(ctx, "Sub", [up, down])
    else:
        quotient = _unary(ctx, "Floor", ratio)
    ctx.bind(node.output[0], emit_broadcast(ctx, "Sub", [x, emit_broadcast(
        ctx, "Mul", [quotient, _f32(d)])]))


converter("Mod", 13)(mod)


def _log_sum_exp(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> tuple[Dyn, Dyn]:
    """(m, log sum exp(x - m)) over ``axes`` (kept), m the maximum: the shifted form every
    runtime uses, whose exponentials cannot overflow."""
    attrs = {"axes": axes, "keepdims": 1}
    kept = reduced_shape(x.shape, axes, 1)
    top = ctx.emit("ReduceMax", [x], kept, attrs)
    shifted = emit_broadcast(ctx, "Sub", [x, top])
    total = ctx.emit("ReduceSum", [_unary(ctx, "Exp", shifted)], kept, attrs)
    return top, _unary(ctx, "Log", total)


@converter("LogSoftmax", 1)
def log_softmax(ctx: ConvertContext, node) -> None:
    """x - m - log sum exp(x - m) along ``axis`` (opset < 13: the input as 2-D at ``axis``)."""
    x = ctx.value(node.input[0])
    if ctx.opset >= 13:
        axis = normalize_axis(ctx.attr(node, "axis", -1), x.rank)
        flat = x
    else:
        axis = normalize_axis(ctx.attr(node, "axis", 1), x.rank)
        flat = reshape_value(ctx, x, (int(np.prod(x.shape[:axis])),
                                      int(np.prod(x.shape[axis:]))))
        axis = 1
    top, log_total = _log_sum_exp(ctx, flat, (axis,))
    out = emit_broadcast(ctx, "Sub", [emit_broadcast(ctx, "Sub", [flat, top]), log_total])
    ctx.bind(node.output[0], out if flat is x else reshape_value(ctx, out, x.shape))


converter("LogSoftmax", 11)(log_softmax)
converter("LogSoftmax", 13)(log_softmax)


def _reduction(build):
    """A Reduce* converter: ``build(ctx, x, axes)`` gives the reduction with its axes kept;
    keepdims=0 drops them by a reshape."""

    def convert(ctx: ConvertContext, node) -> None:
        x = ctx.value(node.input[0])
        found = reduce_axes(ctx, node, x, 18)
        if found is None:  # (runtimes differ on whether the elementwise part applies)
            raise unsupported(node, "empty axes with noop_with_empty_axes")
        axes, keepdims = found
        out = build(ctx, x, axes)
        if not keepdims:
            out = reshape_value(ctx, out, reduced_shape(x.shape, axes, 0))
        ctx.bind(node.output[0], out)

    return convert


def _sum(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> Dyn:
    return ctx.emit("ReduceSum", [x], reduced_shape(x.shape, axes, 1),
                    {"axes": axes, "keepdims": 1})


def _sum_square(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> Dyn:
    return _sum(ctx, _unary(ctx, "Pow", x, {"exponent": 2.0}), axes)


def _reduce_min(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> Dyn:
    top = ctx.emit("ReduceMax", [_unary(ctx, "Neg", x)], reduced_shape(x.shape, axes, 1),
                   {"axes": axes, "keepdims": 1})
    return _unary(ctx, "Neg", top)


def _reduce_l2(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> Dyn:
    # (Relu: a float32 sum of squares is never negative; its interval may dip below 0 by
    # the rounding allowance, outside Sqrt's domain)
    return _unary(ctx, "Sqrt", _unary(ctx, "Relu", _sum_square(ctx, x, axes)))


def _reduce_log_sum_exp(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> Dyn:
    top, log_total = _log_sum_exp(ctx, x, axes)
    return emit_broadcast(ctx, "Add", [log_total, top])


def _reduce_prod(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...]) -> Dyn:
    """The product over ``axes`` as pairwise Muls of halves (a tree of depth log2 n): the
    reduced axes are moved last and flattened, then halved until one value is left. Any
    order of the n - 1 float32 products lies within the same relative envelope, so each
    Mul's allowance covers onnxruntime's sequential order too."""
    kept = [a for a in range(x.rank) if a not in axes]
    moved = x
    if kept + list(axes) != list(range(x.rank)):
        perm = tuple(kept + list(axes))
        moved = ctx.emit("Transpose", [x], tuple(x.shape[p] for p in perm), {"perm": perm})
    n = math.prod(x.shape[a] for a in axes)
    flat = reshape_value(ctx, moved, tuple(x.shape[a] for a in kept) + (n,))
    last = len(kept)
    while n > 1:
        half = n // 2
        a = emit_slice(ctx, flat, [last], [0], [half], [1])
        b = emit_slice(ctx, flat, [last], [half], [2 * half], [1])
        pairs = emit_broadcast(ctx, "Mul", [a, b])
        if n % 2:
            odd = emit_slice(ctx, flat, [last], [n - 1], [n], [1])
            pairs = ctx.emit("Concat", [pairs, odd], pairs.shape[:-1] + (half + 1,),
                             {"axis": last})
        flat, n = pairs, half + n % 2
    return reshape_value(ctx, flat, reduced_shape(x.shape, axes, 1))


for _op, _build in (("ReduceMin", _reduce_min), ("ReduceProd", _reduce_prod),
                    ("ReduceL1", lambda ctx, x, axes: _sum(ctx, _unary(ctx, "Abs", x), axes)),
                    ("ReduceL2", _reduce_l2), ("ReduceSumSquare", _sum_square),
                    ("ReduceLogSumExp", _reduce_log_sum_exp)):
    for _version in (1, 11, 13, 18):
        converter(_op, _version)(_reduction(_build))


def _normalize(ctx: ConvertContext, x: Dyn, axes: tuple[int, ...], epsilon: float
               ) -> tuple[Dyn, Dyn, Dyn]:
    """((x - m) r, m, r) with m the mean over ``axes`` (kept) and r = 1 / sqrt(var + eps),
    var = mean(x^2) - m^2 as onnxruntime computes it. The Relu is the identity wherever the
    runtime's var + eps is a number a square root takes (elsewhere its output is NaN).

    That difference of two means loses their dependence under bound propagation (its lower
    end falls below 0 and its upper end grows with mean(x^2)'s). The same reals give the
    centred form v = mean((x - m)^2), and the runtime's float32 value is within c (v + m^2)
    of it (c = ``rules.floors.variance_slack``, its error analysis): var is v in a Slack
    node (``bounds.rules.slack``) carrying that error, so bounds follow v (each square >= 0,
    CROWN-tight) and the error enters as a rounding allowance. (The max of the float form
    and a floor below it, used before, gave CROWN a constant lower plane: a trained
    two-block transformer's bound was -1.92 where this form gives +1.99.)"""
    kept = reduced_shape(x.shape, axes, 1)
    attrs = {"axes": axes, "keepdims": 1}
    mean = ctx.emit("ReduceMean", [x], kept, attrs)
    centred = emit_broadcast(ctx, "Sub", [x, mean])
    centred_var = ctx.emit("ReduceMean", [_unary(ctx, "Pow", centred, {"exponent": 2.0})],
                           kept, attrs)
    count = math.prod(x.shape[a] for a in axes)
    variance = ctx.emit("Slack", [centred_var, _unary(ctx, "Pow", mean, {"exponent": 2.0})],
                        kept, {"relative": variance_slack(count)})
    if epsilon:
        variance = emit_broadcast(ctx, "Add", [variance, _f32(epsilon)])
    guarded = _unary(ctx, "Relu", variance)
    inverse = _unary(ctx, "Reciprocal", _unary(ctx, "Sqrt", guarded))
    return emit_broadcast(ctx, "Mul", [centred, inverse]), mean, inverse


def _affine(ctx: ConvertContext, y: Dyn, scale, bias) -> Dyn:
    y = emit_broadcast(ctx, "Mul", [y, scale if isinstance(scale, Dyn) else _f32(scale)])
    if bias is None:
        return y
    return emit_broadcast(ctx, "Add", [y, bias if isinstance(bias, Dyn) else _f32(bias)])


@converter("LayerNormalization", 17)
def layer_normalization(ctx: ConvertContext, node) -> None:
    """Normalised over the axes from ``axis`` on, then scale and bias (broadcast); the
    optional Mean and InvStdDev outputs are the pieces of the same name."""
    x = ctx.value(node.input[0])
    axis = normalize_axis(int(ctx.attr(node, "axis", -1)), x.rank)
    epsilon = float(ctx.attr(node, "epsilon", 1e-5))
    y, mean, inverse = _normalize(ctx, x, tuple(range(axis, x.rank)), epsilon)
    ctx.bind(node.output[0], _affine(ctx, y, ctx.value(node.input[1]), ctx.optional(node, 2)))
    for pos, value in ((1, mean), (2, inverse)):
        if len(node.output) > pos and node.output[pos]:
            ctx.bind(node.output[pos], value)


@converter("InstanceNormalization", 1)
def instance_normalization(ctx: ConvertContext, node) -> None:
    """Normalised per sample and channel over the spatial axes, then per-channel scale and
    bias."""
    x = ctx.value(node.input[0])
    if x.rank < 3:
        raise unsupported(node, f"an input of rank {x.rank} (N, C and spatial axes needed)")
    epsilon = float(ctx.attr(node, "epsilon", 1e-5))
    y, _, _ = _normalize(ctx, x, tuple(range(2, x.rank)), epsilon)
    per_channel = (x.shape[1],) + (1,) * (x.rank - 2)
    scale, bias = (ctx.value(node.input[k]) for k in (1, 2))
    if isinstance(scale, Dyn) or isinstance(bias, Dyn):
        raise unsupported(node, "an input-dependent scale or bias")
    ctx.bind(node.output[0], _affine(ctx, y, np.reshape(scale, per_channel),
                                     np.reshape(bias, per_channel)))


converter("InstanceNormalization", 6)(instance_normalization)


@converter("LRN", 1)
def local_response_normalization(ctx: ConvertContext, node) -> None:
    """x (bias + alpha / size * sum of x^2 over a window of ``size`` channels)^-beta.

    onnxruntime (N, C, H, W inputs only; odd sizes, alpha and beta > 0: others are refused
    here by name) keeps the window's sum as a running sum over the channels: the first
    window's ``size`` products added to bias one by one, then per channel the product that
    enters added and the one that leaves subtracted (alpha / size is the float32 quotient it
    multiplies by). Each of its T = size + 2 (C - 1) roundings is at most u times the partial
    sum it rounds: bias (in all of them) plus the squares then in the window (one square is in
    at most 3 size + 2 of them; its product rounds twice more), so the error stays within u B
    (1 + O(T u)) for B = T |bias| + (3 size + 4) alpha / size * (the squares up to the
    window's end): the window's exact sum (a banded 1x1 Conv across the channels) goes into
    a Slack node stating that (B a second, triangular one; ``floors.running_sum_slack``)."""
    x = ctx.value(node.input[0])
    if x.rank != 4:
        raise unsupported(node, f"an input of rank {x.rank} (onnxruntime's kernel takes N, C, "
                                "H, W)")
    size = int(ctx.attr(node, "size", 0))
    alpha, beta, bias = (np.float32(ctx.attr(node, name, default)) for name, default in
                         (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    if size < 1 or size % 2 == 0 or not (alpha > 0 and beta > 0):
        raise unsupported(node, f"size {size}, alpha {alpha}, beta {beta} (onnxruntime's "
                                "kernel takes an odd size and alpha, beta > 0)")
    share = np.float32(alpha / np.float32(size))
    channels = x.shape[1]
    half = (size - 1) // 2
    out, into = np.meshgrid(np.arange(channels), np.arange(channels), indexing="ij")
    window = ((into >= out - half) & (into <= out + half)) * share
    steps = size + 2 * (channels - 1)
    seen = (into <= out + half) * _f32_up((3 * size + 4) * np.float64(share))
    squares = _unary(ctx, "Pow", x, {"exponent": 2.0})
    exact = _channel_mix(ctx, squares, window, np.full(channels, bias))
    partials = _channel_mix(ctx, squares, seen,
                            np.full(channels, _f32_up(steps * abs(np.float64(bias)))))
    scale = ctx.emit("Slack", [exact, partials], exact.shape,
                     {"relative": running_sum_slack(steps)})
    ctx.bind(node.output[0], emit_broadcast(
        ctx, "Mul", [x, _unary(ctx, "Pow", scale, {"exponent": -float(beta)})]))


def _f32_up(value: float) -> np.float32:
    """The least float32 >= value (a magnitude that may only grow)."""
    f = np.float32(value)
    return f if f >= value else np.nextafter(f, np.float32(np.inf))


def _channel_mix(ctx: ConvertContext, x: Dyn, weight: np.ndarray, bias: np.ndarray) -> Dyn:
    """weight [C, C] applied across the channels of x [N, C, H, W] at every pixel, plus bias:
    a 1x1 Conv (the engines keep a convolution's window structure, where a Linear over
    transposed channels made CROWN's intermediate coefficients dense: an AlexNet-style net at
    CIFAR shape peaked at 13.7 GB)."""
    c = weight.shape[0]
    return ctx.emit("Conv", [x, weight.astype(np.float32).reshape(c, c, 1, 1),
                             bias.astype(np.float32)], x.shape,
                    {"strides": (1, 1), "dilations": (1, 1), "group": 1, "pads": (0, 0, 0, 0)},
                    hint="conv")


converter("LRN", 13)(local_response_normalization)


@converter("ThresholdedRelu", 10)
def thresholded_relu(ctx: ConvertContext, node) -> None:
    """x where x > alpha, else 0 (a step at alpha when alpha != 0)."""
    x = ctx.value(node.input[0])
    alpha = _f32(float(ctx.attr(node, "alpha", 1.0)))
    above = emit_broadcast(ctx, "Greater", [x, alpha])
    ctx.bind(node.output[0], emit_broadcast(ctx, "Select", [above, x, _f32(0.0)]))


converter("ThresholdedRelu", 22)(thresholded_relu)


@converter("Shrink", 9)
def shrink(ctx: ConvertContext, node) -> None:
    """x - bias above lambd, x + bias below -lambd, 0 between: Relu(x - l) - Relu(-x - l)
    when bias = lambd (continuous), else two steps (Selects)."""
    x = ctx.value(node.input[0])
    lambd, bias = float(ctx.attr(node, "lambd", 0.5)), float(ctx.attr(node, "bias", 0.0))
    if lambd < 0:
        raise unsupported(node, f"lambd={lambd!r} < 0")
    if bias == lambd:
        up = _unary(ctx, "Relu", emit_broadcast(ctx, "Sub", [x, _f32(lambd)]))
        down = _unary(ctx, "Relu", emit_broadcast(ctx, "Sub", [_unary(ctx, "Neg", x),
                                                               _f32(lambd)]))
        ctx.bind(node.output[0], emit_broadcast(ctx, "Sub", [up, down]))
        return
    above = emit_broadcast(ctx, "Greater", [x, _f32(lambd)])
    below = emit_broadcast(ctx, "Greater", [_f32(-lambd), x])
    low = emit_broadcast(ctx, "Select", [below, emit_broadcast(ctx, "Add", [x, _f32(bias)]),
                                         _f32(0.0)])
    ctx.bind(node.output[0], emit_broadcast(ctx, "Select", [
        above, emit_broadcast(ctx, "Sub", [x, _f32(bias)]), low]))


@converter("MeanVarianceNormalization", 9)
def mean_variance_normalization(ctx: ConvertContext, node) -> None:
    """(x - mean) / sqrt(var) over ``axes`` (default N, H, W), without an epsilon as ONNX and
    onnxruntime define it: bounded only where the variance keeps a positive lower bound."""
    x = ctx.value(node.input[0])
    axes = ctx.attr(node, "axes") or [0, 2, 3]
    axes = tuple(sorted({normalize_axis(int(a), x.rank) for a in axes}))
    ctx.bind(node.output[0], _normalize(ctx, x, axes, 0.0)[0])


converter("MeanVarianceNormalization", 13)(mean_variance_normalization)


def _lp_terms(ctx: ConvertContext, node, x: Dyn) -> tuple[Dyn, int]:
    """(|x|^p, p) for p = 1 or 2."""
    p = int(ctx.attr(node, "p", 2))
    if p not in (1, 2):
        raise unsupported(node, f"p={p} (1 and 2 are handled)")
    return (_unary(ctx, "Abs", x) if p == 1 else _unary(ctx, "Pow", x, {"exponent": 2.0})), p


def _lp_root(ctx: ConvertContext, total: Dyn, p: int) -> Dyn:
    # (Relu: a float32 sum of squares is never negative, its interval may dip below 0)
    return total if p == 1 else _unary(ctx, "Sqrt", _unary(ctx, "Relu", total))


@converter("LpPool", 2)
def lp_pool(ctx: ConvertContext, node) -> None:
    """(sum over each window of |x|^p)^(1/p), zero padding included: an AveragePool counting
    the padding, times the window size."""
    from verifier.onnx_import.converters.pooling import pool_attrs

    x = ctx.value(node.input[0])
    attrs, shape = pool_attrs(ctx, node, x, "AveragePool")
    if any(attrs["extra"]) or any(d != 1 for d in attrs["dilations"]):
        raise unsupported(node, "ceil_mode or dilations")
    terms, p = _lp_terms(ctx, node, x)
    mean = ctx.emit("AveragePool", [terms], shape, {**attrs, "count_include_pad": 1})
    total = emit_broadcast(ctx, "Mul", [mean, _f32(float(np.prod(attrs["kernel_shape"])))])
    ctx.bind(node.output[0], _lp_root(ctx, total, p))


for _version in (11, 18):
    converter("LpPool", _version)(lp_pool)


@converter("GlobalLpPool", 2)
def global_lp_pool(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    terms, p = _lp_terms(ctx, node, x)
    ctx.bind(node.output[0], _lp_root(ctx, _sum(ctx, terms, tuple(range(2, x.rank))), p))
