"""MILP encodings of the nonlinear ops, given sound bounds [l, u] of their inputs.

Which encoding an op gets is stated by its rule (``OpRule.milp``). Exact (piecewise-linear)
encodings, all reduced to one big-M Relu so that each gets the same treatment of stable neurons
(no binary) and the same M = the CROWN bound:

* Relu: unstable l < 0 < u gets y >= 0, y >= x, y <= u a, y <= x - l (1 - a), a binary.
* "kinks" ops: the rule gives y = c + s x + sum_k w_k relu(x - t_k) (``Kinks``; e.g.
  LeakyRelu(alpha) = alpha x + (1 - alpha) relu(x), Abs = 2 relu(x) - x, Clip(lo, hi) =
  lo + relu(x - lo) - relu(x - hi)); every Relu is exact, so the sum is.
* "window_max" ops (MaxPool / ReduceMax): y = max_i x_i over each window. The windows come
  from the rule's own ``forward`` applied to one-hot inputs (so every attribute, padding and
  dilation included, is read the way the bound engines read it). Elements with
  u_i < max_j l_j can never be the maximum and are dropped; one left: y = x_i; else one
  binary a_i per element, sum a_i = 1, y >= x_i, y <= x_i + (max_j u_j - l_i)(1 - a_i),
  which is exact.

Relaxed (``exact`` False): a "relaxed" op (an elementwise ``relax`` rule: Sigmoid, Exp, ...)
gets the rule's linear planes at its input bounds plus the output's own bounds. That region
contains every reachable point, so an infeasible MILP still proves ``unsat``, but a MILP point is
only a candidate (verify.py checks it with onnxruntime).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bounds.graph import Graph, Node
from bounds.registry import Kinks, rules
from verifier.milp.model import INF, Expr, MilpModel, stack_rows, union_idx

DTYPE = torch.float64
ONE_HOT_CHUNK = 512


def combine(terms: list[tuple[np.ndarray | float, Expr]]) -> Expr:
    """sum_i scale_i * expr_i with per-position (or scalar) scales."""
    idx = union_idx([e for _, e in terms])
    n = terms[0][1].size
    mat, const = None, np.zeros(n)
    for scale, e in terms:
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
        part = e.on(idx)
        part = part * float(s[0]) if np.ndim(scale) == 0 else part.multiply(s[:, None])
        mat = part if mat is None else mat + part
        const += s * e.const
    return Expr(idx, mat.tocsr(), const)


def shift(x: Expr, c: float | np.ndarray) -> Expr:
    """x + c."""
    return Expr(x.idx, x.mat, x.const + c)


def relu(model: MilpModel, x: Expr, lower: np.ndarray, upper: np.ndarray) -> tuple[Expr, int]:
    """Big-M encoding of y = max(x, 0) for x in [lower, upper]; returns (y, #binaries)."""
    active = lower >= 0
    unstable = ~active & (upper > 0)
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
    return stack_rows(parts, x.size), int(idx_u.size)


def kinks(model: MilpModel, x: Expr, lower, upper, form: Kinks) -> tuple[Expr, int]:
    """y = const + slope x + sum_k w_k relu(x - t_k) (the rule's ``Kinks``), each Relu by
    :func:`relu` on its shifted bounds; returns (y, #binaries)."""
    terms, n_bin = [], 0
    if form.slope:
        terms.append((form.slope, x))
    for weight, at in form.terms:
        src = shift(x, -at) if at else x
        r, k = relu(model, src, lower - at, upper - at)
        terms.append((weight, r))
        n_bin += k
    if not terms:
        return Expr.constant(np.full(x.size, float(form.const))), 0
    y = terms[0][1] if len(terms) == 1 and terms[0][0] == 1.0 else combine(terms)
    return (shift(y, form.const) if form.const else y), n_bin


def windows(graph: Graph, node: Node) -> list[np.ndarray]:
    """For each flattened output position of a max node, the input positions it maximises."""
    rule = rules().get(node.op, node.name)
    shape = graph.shape_of(node.dynamic_inputs[0])
    n_in, n_out = math.prod(shape), math.prod(node.shape)
    member = []
    with torch.no_grad():
        for start in range(0, n_in, ONE_HOT_CHUNK):
            rows = min(ONE_HOT_CHUNK, n_in - start)
            eye = torch.zeros(rows, n_in, dtype=DTYPE)
            eye[torch.arange(rows), torch.arange(start, start + rows)] = 1.0
            out = rule.forward(node, [eye.reshape(rows, *shape)]).reshape(rows, n_out)
            member.append((out > 0.5).numpy())
    mat = np.concatenate(member)  # [n_in, n_out]
    return [np.flatnonzero(mat[:, j]) for j in range(n_out)]


def maximum(model: MilpModel, x: Expr, lower, upper, wins: list[np.ndarray]
            ) -> tuple[Expr, int]:
    """y_j = max_{i in wins[j]} x_i (big-M, one binary per candidate element)."""
    parts, n_bin = [], 0
    for j, win in enumerate(wins):
        floor = lower[win].max()
        cand = win[upper[win] >= floor]
        if cand.size == 1:
            parts.append((np.array([j]), x.rows(cand)))
            continue
        top = upper[cand].max()
        y = Expr.variables(model.add_vars([floor], [top]))
        a = Expr.variables(model.add_vars(np.zeros(cand.size), np.ones(cand.size), integer=True))
        n = cand.size
        ys = Expr(y.idx, np.ones((n, 1)), np.zeros(n))
        xs = x.rows(cand)
        model.add_rows(combine([(1.0, ys), (-1.0, xs)]), 0.0, INF)  # y >= x_i
        big = top - lower[cand]
        # y - x_i + M_i a_i <= M_i
        model.add_rows(combine([(1.0, ys), (-1.0, xs), (big, a)]), -INF, big)
        model.add_rows(Expr(a.idx, np.ones((1, n)), np.zeros(1)), 1.0, 1.0)
        parts.append((np.array([j]), y))
        n_bin += n
    return stack_rows(parts, len(wins)), n_bin


def relaxed(model: MilpModel, node: Node, x: Expr, lower, upper, out_lo, out_hi) -> Expr:
    """A fresh y per position in [out_lo, out_hi] between the rule's linear planes at [l, u]."""
    rule = rules().get(node.op, node.name)
    lo_t = torch.as_tensor(lower, dtype=DTYPE).reshape(1, -1)
    hi_t = torch.as_tensor(upper, dtype=DTYPE).reshape(1, -1)
    shape = (1, *node.shape)
    with torch.no_grad():
        rel = rule.relax(node, lo_t.reshape(shape), hi_t.reshape(shape))
    ls, lo_off, us, up_off = (np.broadcast_to(t.detach().double().cpu().numpy().reshape(-1)
                                              if torch.is_tensor(t) else np.asarray(t, float),
                                              (x.size,))
                              for t in (rel.lower_slope, rel.lower_offset, rel.upper_slope,
                                        rel.upper_offset))
    y = Expr.variables(model.add_vars(out_lo, out_hi))
    ok = np.isfinite(ls) & np.isfinite(lo_off)
    if ok.any():  # y - ls x >= lo_off
        model.add_rows(combine([(1.0, y.rows(ok)), (-ls[ok], x.rows(ok))]), lo_off[ok], INF)
    ok = np.isfinite(us) & np.isfinite(up_off)
    if ok.any():  # y - us x <= up_off
        model.add_rows(combine([(1.0, y.rows(ok)), (-us[ok], x.rows(ok))]), -INF, up_off[ok])
    return y


def can_relax(node: Node) -> bool:
    """Whether ``relaxed`` applies: a rule whose MILP encoding is "relaxed" (an elementwise op
    with a relax rule) and one dynamic input."""
    registry = rules()
    if node.op not in registry or len(node.dynamic_inputs) != 1:
        return False
    return registry.get(node.op, node.name).milp.kind == "relaxed"


def is_piecewise(node: Node) -> bool:
    """Whether the node gets an exact piecewise-linear encoding ("kinks", "window_max", or
    the choices of ``verifier.milp.choices``: "argmax", "leaves")."""
    registry = rules()
    return (node.op in registry and len(node.dynamic_inputs) == 1
            and registry.get(node.op, node.name).milp.kind in PIECEWISE)


PIECEWISE = ("kinks", "window_max", "argmax", "leaves")
