"""Encode an IR graph over an input box as a MILP (``MilpModel``), node by node.

* Affine nodes (Linear, Conv, Reshape, Add/Sub with constants, ... : whatever the registry marks
  affine) are encoded exactly: the node's own ``forward`` applied to the columns of its input
  expression gives its linear part, applied to the constant part gives its offset.
* Relu: stable neurons need no binary (active: y = x, inactive: y = 0); an unstable neuron with
  pre-activation bounds l < 0 < u gets y >= 0, y >= x, y <= u a, y <= x - l (1 - a), a binary.
  The bounds come from our (sound) CROWN intermediate bounds, so the big-M constraints cut off
  no reachable point.
* Float32 rounding: with ``float_errors`` each node whose rounding model (bounds/engine/rounding)
  allows an error |e| <= delta gets a fresh variable z with ``x - delta <= z <= x + delta``
  For dot-product nodes (Linear, Conv, ...) the allowance gamma(n+1) (|W| |x| + |b|) is kept as
  an affine expression of the input (|x| = x after a ReLU), far tighter than its interval value.
  The MILP then over-approximates every float32 execution, as the bound engines do.
Any other op raises ``MilpUnsupportedError``, which callers turn into ``unknown``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bounds.engine.constants import as_tensor
from bounds.engine.rounding import DOT_OPS, gamma, reduction_length
from bounds.graph import Graph, Node
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from verifier.milp.model import INF, Expr, MilpModel, stack_rows, union_idx

DTYPE = torch.float64


class MilpUnsupportedError(NotImplementedError):
    """The graph holds an op the MILP encoding does not handle (names the op and node)."""


@dataclass
class Encoding:
    """The model, the input columns and the flattened output expression."""

    model: MilpModel
    inputs: np.ndarray  # column indices of the flattened input
    output: Expr
    n_unstable: int


def unsupported_ops(graph: Graph) -> list[str]:
    """The ops of ``graph`` the encoding cannot handle (empty when it can encode all)."""
    registry = rules()
    bad = []
    for node in graph.nodes:
        if node.op == "Relu":
            continue
        rule = registry.get(node.op, node.name) if node.op in registry else None
        if rule is None or not node_is_affine(node, rule):
            bad.append(node.op)
    return sorted(set(bad))


def check_supported(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise MilpUnsupportedError("MILP encoding needs one graph input and one output")
    bad = unsupported_ops(graph)
    if bad:
        raise MilpUnsupportedError(f"MILP encoding does not support op(s): {', '.join(bad)}")


def combine(terms: list[tuple[np.ndarray | float, Expr]]) -> Expr:
    """sum_i scale_i * expr_i with per-position (or scalar) scales."""
    idx = union_idx([e for _, e in terms])
    n = terms[0][1].size
    mat, const = np.zeros((n, len(idx))), np.zeros(n)
    for scale, e in terms:
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
        mat += s[:, None] * e.on(idx)
        const += s * e.const
    return Expr(idx, mat, const)


def _affine(graph: Graph, node: Node, values: dict[str, Expr]) -> Expr:
    """Exact encoding of an affine node by applying its ``forward`` to basis columns."""
    rule = rules().get(node.op, node.name)
    exprs = [values[n] for n in node.dynamic_inputs]
    idx = union_idx(exprs)
    m = len(idx)

    def args(dynamic):
        out, it = [], iter(dynamic)
        for pos, name in enumerate(node.inputs):
            if name is None:
                const = node.consts.get(pos)
                out.append(None if const is None else as_tensor(const, "cpu", DTYPE))
            else:
                out.append(next(it))
        return out

    shapes = [graph.shape_of(n) for n in node.dynamic_inputs]
    with torch.no_grad():
        offset = rule.forward(node, args([torch.as_tensor(e.const).reshape(1, *s)
                                          for e, s in zip(exprs, shapes, strict=True)]))
        n_out = math.prod(node.shape)
        if m == 0:
            return Expr.constant(offset.reshape(-1).numpy())
        zero = rule.forward(node, args([torch.zeros(1, *s, dtype=DTYPE) for s in shapes]))
        basis = [torch.as_tensor(e.on(idx).T.copy()).reshape(m, *s)
                 for e, s in zip(exprs, shapes, strict=True)]
        linear = rule.forward(node, args(basis)) - zero
    mat = linear.reshape(m, n_out).T.numpy().copy()
    mat[np.abs(mat) < 1e-300] = 0.0
    return Expr(idx, mat, offset.reshape(-1).numpy().astype(np.float64))


def _relu(model: MilpModel, x: Expr, lower: np.ndarray, upper: np.ndarray) -> tuple[Expr, int]:
    """Big-M encoding of y = max(x, 0) for x in [lower, upper]; returns (y, #binaries)."""
    active = lower >= 0
    unstable = ~active & (upper > 0)
    n = x.size
    idx_a, idx_u = np.flatnonzero(active), np.flatnonzero(unstable)
    parts = []
    if idx_a.size:
        parts.append((idx_a, x.rows(idx_a)))
    if idx_u.size:
        lo, hi, xu = lower[idx_u], upper[idx_u], x.rows(idx_u)
        y = Expr.variables(model.add_vars(np.zeros(idx_u.size), hi))
        a = Expr.variables(model.add_vars(np.zeros(idx_u.size), np.ones(idx_u.size),
                                          integer=True))
        model.add_rows(combine([(1.0, y), (-1.0, xu)]), 0.0, INF)  # y >= x
        model.add_rows(combine([(1.0, y), (-hi, a)]), -INF, 0.0)  # y <= u a
        model.add_rows(combine([(1.0, y), (-1.0, xu), (-lo, a)]), -INF, -lo)  # y <= x - l(1-a)
        parts.append((idx_u, y))
    return stack_rows(parts, n), int(idx_u.size)


def _materialise(model: MilpModel, x: Expr, lower, upper, err: Expr | np.ndarray) -> Expr:
    """A fresh variable z per position with |z - x| <= err (a bounded rounding error); ``err``
    is a constant array or an affine expression that is nonnegative wherever it matters."""
    z = model.add_vars(lower, upper)
    diff = Expr(np.concatenate([x.idx, z]), np.hstack([x.mat, -np.eye(x.size)]), x.const)
    if isinstance(err, np.ndarray):
        model.add_rows(diff, -err, err)
        return Expr.variables(z)
    model.add_rows(combine([(1.0, diff), (-1.0, err)]), -INF, 0.0)  # x - z <= err
    model.add_rows(combine([(1.0, diff), (1.0, err)]), 0.0, INF)  # x - z >= -err
    return Expr.variables(z)


def _magnitude(x: Expr, lower: np.ndarray, upper: np.ndarray) -> Expr:
    """An affine m >= |x| on the box: x where x >= 0, -x where x <= 0, else max(|l|, |u|)."""
    pos, neg = lower >= 0, (upper <= 0) & (lower < 0)
    scale = np.where(pos, 1.0, np.where(neg, -1.0, 0.0))
    const = np.where(pos | neg, 0.0, np.maximum(np.abs(lower), np.abs(upper)))
    e = combine([(scale, x)])
    return Expr(e.idx, e.mat, e.const + const)


def _dot_error(graph: Graph, node: Node, values: dict, bounds: dict) -> Expr | None:
    """Rounding error bound of a dot-product node as an affine expression of its input,
    gamma(n+1) (|W| m + |b|) with m >= |x| (rounding.py's model with |x| kept symbolic: on the
    nonnegative outputs of a ReLU this is far tighter than the interval magnitude)."""
    if node.op not in DOT_OPS or len(node.dynamic_inputs) != 1 or not node.consts:
        return None
    src = node.dynamic_inputs[0]
    mag = _magnitude(values[src], _flat(bounds[src].lower), _flat(bounds[src].upper))
    abs_node = Node(node.name, node.op, node.inputs, node.shape, node.attrs,
                    {p: np.abs(c) for p, c in node.consts.items()})
    scaled = _affine(graph, abs_node, {src: mag})
    g = gamma(reduction_length(node, graph.shape_of(src)) + 1)
    return Expr(scaled.idx, g * scaled.mat, g * scaled.const)


def _flat(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().reshape(-1).double().cpu().numpy()


def encode(graph: Graph, lower: np.ndarray, upper: np.ndarray, bounds: dict, deltas: dict,
           float_errors: bool = True) -> Encoding:
    """MILP of ``graph`` for flattened inputs in [lower, upper].

    ``bounds`` maps value names to sound ``Interval``s with batch 1 (e.g. ``bound_spec(...)
    .intermediate``, rounding included) and ``deltas`` to rounding allowances (``state.deltas``).
    """
    check_supported(graph)
    model = MilpModel()
    x_idx = model.add_vars(lower, upper, name="x")
    values = {graph.inputs[0].name: Expr.variables(x_idx)}
    out_name = graph.outputs[0].name
    n_unstable = 0
    for node in graph.nodes:
        if node.op == "Relu":
            src = node.dynamic_inputs[0]
            box = bounds[src]
            expr, k = _relu(model, values[src], _flat(box.lower), _flat(box.upper))
            n_unstable += k
        else:
            expr = _affine(graph, node, values)
        delta = _flat(deltas.get(node.name)) if float_errors else None
        if delta is not None and np.any(delta > 0):
            box = bounds[node.name]
            err = _dot_error(graph, node, values, bounds)
            expr = _materialise(model, expr, _flat(box.lower), _flat(box.upper),
                                delta if err is None else err)
        values[node.name] = expr
    return Encoding(model, x_idx, values[out_name], n_unstable)
