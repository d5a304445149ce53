"""RNN, GRU and LSTM, unrolled over their sequence (its length is static) into IR ops the
engines already bound: one Linear for every step's input projection, then per step a Linear
of the previous hidden state, gate slices, the gate activations and the products that mix
them (LSTM's cell and output, GRU's reset and update), each product a Mul of two
input-dependent values (bounded by the product rules; GenBaB splits their factors).

The pieces follow the ONNX formulas in the order onnxruntime's kernels compute them (gate
pre-activations: input projection, recurrent projection, biases, peepholes, then the clip;
``Ct = ft Ct-1 + it ct``; GRU's ``Ht = (1 - zt) ht + zt Ht-1``), so each piece's float32
allowance covers one of its roundings; the activations are onnxruntime's own Sigmoid and Tanh
kernels, whose measured error the transcendental allowance already covers.

A missing initial state is zero, so the first step has no recurrent term and no product with
it (exact, and tighter). ``sequence_lens`` must be a constant that gives every batch element
the same length L (1 <= L <= the sequence): steps from L on are zeros in Y, and Y_h / Y_c hold
the state after step L (the reverse direction starts at step L - 1). Activation functions:
Sigmoid, Tanh, Relu, LeakyRelu, HardSigmoid, Affine, ScaledTanh, Elu, Softsign, Softplus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verifier.onnx_import.context import ConvertContext, Dyn, unsupported
from verifier.onnx_import.converters.arithmetic import emit_broadcast
from verifier.onnx_import.converters.composite import elu_of, hard_sigmoid_of, softsign_of
from verifier.onnx_import.converters.linear import emit_linear
from verifier.onnx_import.converters.shape import emit_slice, join_values, reshape_value
from verifier.onnx_import.registry import converter

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTIVATIONS = {"RNN": ("Tanh",), "GRU": ("Sigmoid", "Tanh"),
                       "LSTM": ("Sigmoid", "Tanh", "Tanh")}
# (takes alpha, takes beta, default alpha, default beta); None: the op's attribute must say it
_PARAMS = {"relu": (False, False, None, None), "tanh": (False, False, None, None),
           "sigmoid": (False, False, None, None), "softsign": (False, False, None, None),
           "softplus": (False, False, None, None), "leakyrelu": (True, False, 0.01, None),
           "elu": (True, False, 1.0, None), "hardsigmoid": (True, True, 0.2, 0.5),
           "affine": (True, True, None, None), "scaledtanh": (True, True, None, None)}


def _f32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


@dataclass(frozen=True)
class _Activation:
    name: str  # lower case
    alpha: float | None
    beta: float | None

    def __call__(self, ctx: ConvertContext, node, x: Dyn) -> Dyn:
        name, a, b = self.name, self.alpha, self.beta
        if name in ("relu", "tanh", "sigmoid", "softplus"):
            return ctx.emit({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid",
                             "softplus": "Softplus"}[name], [x], x.shape)
        if name == "leakyrelu":
            return ctx.emit("LeakyRelu", [x], x.shape, {"alpha": a})
        if name == "elu":
            return elu_of(ctx, node, x, a)
        if name == "hardsigmoid":
            return hard_sigmoid_of(ctx, x, a, b)
        if name == "softsign":
            return softsign_of(ctx, x)
        if name == "affine":
            return emit_broadcast(ctx, "Add", [emit_broadcast(ctx, "Mul", [x, _f32(a)]),
                                               _f32(b)])
        inner = ctx.emit("Tanh", [emit_broadcast(ctx, "Mul", [x, _f32(b)])], x.shape)
        return emit_broadcast(ctx, "Mul", [inner, _f32(a)])  # scaledtanh


def _activations(ctx: ConvertContext, node, directions: int) -> list[tuple[_Activation, ...]]:
    """Per direction, the op's activation functions (f; f, g; or f, g, h), alphas and betas
    taken in order by the functions that use them, as onnxruntime reads them."""
    per = len(DEFAULT_ACTIVATIONS[node.op_type])
    names = list(ctx.attr(node, "activations", []) or [])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if not names:
        names = list(DEFAULT_ACTIVATIONS[node.op_type]) * directions
    if len(names) != per * directions:
        raise unsupported(node, f"{len(names)} activations for {directions} direction(s) of "
                                f"{per} function(s) each")
    alphas = [float(v) for v in (ctx.attr(node, "activation_alpha", []) or [])]
    betas = [float(v) for v in (ctx.attr(node, "activation_beta", []) or [])]
    made = []
    for name in names:
        key = name.lower()
        if key not in _PARAMS:
            raise unsupported(node, f"activation {name!r} (supported: "
                                    f"{', '.join(sorted(_PARAMS))})")
        takes_a, takes_b, default_a, default_b = _PARAMS[key]
        alpha = alphas.pop(0) if takes_a and alphas else default_a
        beta = betas.pop(0) if takes_b and betas else default_b
        if (takes_a and alpha is None) or (takes_b and beta is None):
            raise unsupported(node, f"activation {name!r} without its activation_alpha/beta")
        made.append(_Activation(key, alpha, beta))
    return [tuple(made[d * per:(d + 1) * per]) for d in range(directions)]


# -- values that may be constants or absent (None = zero) ------------------------------------
def _add(ctx: ConvertContext, a, b):
    if a is None or b is None:
        return b if a is None else a
    if not isinstance(a, Dyn) and not isinstance(b, Dyn):
        return _f32(np.asarray(a) + np.asarray(b))
    return emit_broadcast(ctx, "Add", [a, b])


def _mul(ctx: ConvertContext, a, b):
    if a is None or b is None:
        return None
    if not isinstance(a, Dyn) and not isinstance(b, Dyn):
        return _f32(np.asarray(a) * np.asarray(b))
    return emit_broadcast(ctx, "Mul", [a, b])


def _project(ctx: ConvertContext, h, weight: np.ndarray):
    """h R^T for a state h of shape [B, H] (None: zero)."""
    if h is None:
        return None
    if not isinstance(h, Dyn):
        return _f32(np.asarray(h, np.float32) @ weight.T)
    return emit_linear(ctx, h, weight, None)


def _part(ctx: ConvertContext, v, k: int, width: int):
    """Gate k (columns k*width..) of a [B, G*width] value."""
    if not isinstance(v, Dyn):
        return v[:, k * width:(k + 1) * width]
    return emit_slice(ctx, v, [1], [k * width], [(k + 1) * width], [1])


def _state(ctx: ConvertContext, value, d: int):
    """Direction d's [B, H] slice of an initial state [D, B, H]; None when absent or zero."""
    if value is None:
        return None
    if not isinstance(value, Dyn):
        part = np.asarray(value, np.float32)[d]
        return None if not np.any(part) else part
    one = emit_slice(ctx, value, [0], [d], [d + 1], [1])
    return reshape_value(ctx, one, one.shape[1:])


@dataclass
class _Cell:
    """One direction's weights and options."""
    op: str
    w: np.ndarray  # [G*H, I]
    r: np.ndarray  # [G*H, H]
    wb: np.ndarray  # [G*H]
    rb: np.ndarray  # [G*H]
    peep: np.ndarray | None  # [3*H] (LSTM: i, o, f)
    acts: tuple
    clip: float | None
    linear_before_reset: bool
    input_forget: bool

    @property
    def hidden(self) -> int:
        return self.r.shape[1]


def _pre(ctx: ConvertContext, cell: _Cell, value):
    """A gate's pre-activation: clipped to [-clip, clip] where the op says so."""
    if cell.clip is None:
        return value
    return ctx.emit("Clip", [value], value.shape, {"min": -cell.clip, "max": cell.clip})


def _peephole(cell: _Cell, k: int):
    """LSTM's peephole weights of gate k (0: i, 1: o, 2: f), None without peepholes."""
    width = cell.hidden
    return None if cell.peep is None else _f32(cell.peep[k * width:(k + 1) * width])


def _step(ctx: ConvertContext, node, cell: _Cell, x_proj: Dyn, h, c):
    """One step from the step's input projection x W^T (+ biases) and the previous state."""
    width, acts = cell.hidden, cell.acts

    def gate(v, k):
        return _part(ctx, v, k, width)

    if cell.op == "RNN":
        pre = _add(ctx, x_proj, _project(ctx, h, cell.r))
        return acts[0](ctx, node, _pre(ctx, cell, pre)), None
    if cell.op == "GRU":
        zr = _add(ctx, _part(ctx, x_proj, 0, 2 * width), _project(ctx, h, cell.r[:2 * width]))
        z = acts[0](ctx, node, _pre(ctx, cell, gate(zr, 0)))
        r = acts[0](ctx, node, _pre(ctx, cell, gate(zr, 1)))
        r_h = cell.r[2 * width:]
        if cell.linear_before_reset:
            recurrent = _mul(ctx, r, _add(ctx, _project(ctx, h, r_h), _f32(cell.rb[2 * width:])))
        else:
            recurrent = _project(ctx, _mul(ctx, r, h), r_h)
        cand = acts[1](ctx, node, _pre(ctx, cell, _add(ctx, gate(x_proj, 2), recurrent)))
        keep = emit_broadcast(ctx, "Sub", [_f32(1.0), z])
        return _add(ctx, _mul(ctx, keep, cand), _mul(ctx, z, h)), None
    pre = _add(ctx, x_proj, _project(ctx, h, cell.r))  # LSTM: gates i, o, f, c
    peep = [_peephole(cell, k) for k in range(3)]
    i = acts[0](ctx, node, _pre(ctx, cell, _add(ctx, gate(pre, 0), _mul(ctx, peep[0], c))))
    if cell.input_forget:
        f = emit_broadcast(ctx, "Sub", [_f32(1.0), i])
    else:
        f = acts[0](ctx, node, _pre(ctx, cell, _add(ctx, gate(pre, 2), _mul(ctx, peep[2], c))))
    g = acts[1](ctx, node, _pre(ctx, cell, gate(pre, 3)))
    c_new = _add(ctx, _mul(ctx, f, c), _mul(ctx, i, g))
    o = acts[0](ctx, node, _pre(ctx, cell, _add(ctx, gate(pre, 1), _mul(ctx, peep[1], c_new))))
    return _mul(ctx, o, acts[2](ctx, node, c_new)), c_new


def _input_bias(cell: _Cell) -> np.ndarray:
    """The biases added to every step's input projection: Wb + Rb, except GRU's Rbh under
    linear_before_reset (it sits inside the reset product)."""
    bias = cell.wb.astype(np.float32) + cell.rb.astype(np.float32)
    if cell.op == "GRU" and cell.linear_before_reset:
        bias[2 * cell.hidden:] = cell.wb[2 * cell.hidden:]
    return bias


def _run(ctx: ConvertContext, node, cell: _Cell, xs: Dyn, length: int, reverse: bool, h, c):
    """One direction over steps 0..length-1 of xs [S, B, I]: the hidden state of every step
    (in time order) and the last hidden and cell states."""
    proj = emit_linear(ctx, xs, cell.w, _input_bias(cell))  # [S, B, G*H]
    hidden: list = [None] * length
    for t in (reversed(range(length)) if reverse else range(length)):
        step = emit_slice(ctx, proj, [0], [t], [t + 1], [1])
        h, c = _step(ctx, node, cell, reshape_value(ctx, step, step.shape[1:]), h, c)
        hidden[t] = h
    return hidden, h, c


def _length(ctx: ConvertContext, node, steps: int, batch: int) -> int:
    lens = ctx.optional_const(node, 4)
    if lens is None:
        return steps
    lens = np.broadcast_to(np.ravel(np.asarray(lens)), (batch,))
    if np.any(lens != lens[0]):
        raise unsupported(node, f"sequence_lens {lens.tolist()} differ across the batch")
    if not 1 <= int(lens[0]) <= steps:
        raise unsupported(node, f"sequence_lens {int(lens[0])} outside 1..{steps}")
    return int(lens[0])


def _cells(ctx: ConvertContext, node, directions: int, hidden: int) -> list[_Cell]:
    gates = GATES[node.op_type]
    w = ctx.const(node.input[1], f"W of {node.op_type} node {node.name!r}").astype(np.float32)
    r = ctx.const(node.input[2], f"R of {node.op_type} node {node.name!r}").astype(np.float32)
    if w.shape[:2] != (directions, gates * hidden) or r.shape != (directions, gates * hidden,
                                                                  hidden):
        raise unsupported(node, f"W {list(w.shape)} / R {list(r.shape)} do not match "
                                f"{directions} direction(s) of hidden_size {hidden}")
    b = ctx.optional_const(node, 3, np.zeros((directions, 2 * gates * hidden), np.float32))
    peep = ctx.optional_const(node, 7) if node.op_type == "LSTM" else None
    clip = ctx.attr(node, "clip")
    acts = _activations(ctx, node, directions)
    b = np.asarray(b, np.float32).reshape(directions, 2 * gates * hidden)
    return [_Cell(node.op_type, w[d], r[d], b[d, :gates * hidden], b[d, gates * hidden:],
                  None if peep is None else np.asarray(peep, np.float32).reshape(
                      directions, 3 * hidden)[d],
                  acts[d], None if clip is None else float(clip),
                  bool(ctx.attr(node, "linear_before_reset", 0)),
                  bool(ctx.attr(node, "input_forget", 0)))
            for d in range(directions)]


def recurrent(ctx: ConvertContext, node) -> None:
    xs = ctx.value(node.input[0])
    if not isinstance(xs, Dyn):
        raise unsupported(node, "its sequence input X is constant")
    if xs.rank != 3:
        raise unsupported(node, f"X of rank {xs.rank} (3 expected)")
    if ctx.attr(node, "layout", 0):  # (the import check and the sat re-check need it run)
        raise unsupported(node, "layout=1 (batch-first), which onnxruntime does not run")
    steps, batch = xs.shape[0], xs.shape[1]
    direction = ctx.attr(node, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise unsupported(node, f"direction {direction!r}")
    directions = 2 if direction == "bidirectional" else 1
    hidden = int(ctx.attr(node, "hidden_size", 0))
    if hidden <= 0:
        raise unsupported(node, "hidden_size missing or not positive")
    cells = _cells(ctx, node, directions, hidden)
    length = _length(ctx, node, steps, batch)
    h0 = ctx.optional(node, 5)
    c0 = ctx.optional(node, 6) if node.op_type == "LSTM" else None
    runs = [_run(ctx, node, cell, xs, length,
                 direction == "reverse" or d == 1, _state(ctx, h0, d), _state(ctx, c0, d))
            for d, cell in enumerate(cells)]
    zero = np.zeros((batch, hidden), np.float32)
    if _wanted(node, 0):
        per_step = [join_values(ctx, [run[0][t] if t < length else zero for run in runs], 0, True)
                    for t in range(steps)]
        ctx.bind(node.output[0], join_values(ctx, per_step, 0, True))
    if _wanted(node, 1):
        ctx.bind(node.output[1], join_values(ctx, [run[1] for run in runs], 0, True))
    if node.op_type == "LSTM" and _wanted(node, 2):
        ctx.bind(node.output[2], join_values(ctx, [run[2] for run in runs], 0, True))


def _wanted(node, k: int) -> bool:
    return len(node.output) > k and node.output[k] != ""


for _op in GATES:
    for _version in (7, 14, 22):
        converter(_op, _version)(recurrent)
