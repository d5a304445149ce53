"""GenBaB candidates on products of two perturbed values (Mul / MatMul with two dynamic inputs).

The bound engine relaxes z = x * y by McCormick planes built from the interval bounds of both
operands (``bounds.rules.bilinear``). An element of an operand value x with interval [l, u] is
split at p strictly inside (the midpoint, the optimum for every pair of ranges: see
``bounds.lookup.products``): the children carry [l, p] / [p, u] as given bounds of x, the same
interval split (and the same beta terms for the cut it makes) that general nonlinear neurons
use, so the planes downstream get tighter and the two children cover the parent.

Score (BBPS-style, from the last backward pass only): the final bound meets each product
x_i y_j with coefficient A (per spec row) at its output, and uses there the lower plane
t L1 + (1 - t) L2 where A >= 0 and the upper plane t' U1 + (1 - t') U2 where A < 0 (t, t' from
that pass's alphas, 1/2 by default). A child replaces the parent's plane by its own (default
weights), which changes the term by A * (child plane - parent plane) at the child box's centre
(its mean over the child box: the planes are affine); as for the other kinds, a candidate
scores its worse child, so products compete in the same units. (At the child's centre every
weight gives the same child plane; for a midpoint split the two children gain (1 - t) and t
times wx wy / 4. Scoring the mean of the children instead, which does not depend on t, was
tried: about as good on pure product nets, worse on nets mixing sigmoid, ReLU and products.)
MatMul sums a_ik b_kj over k: splitting a_ik changes
every product a_ik b_kj (j free), so those gains are summed, and likewise for b_kj. Width
baseline: sum over the products of |A| wx wy (the scale of the McCormick gap).
"""

from __future__ import annotations

import math

import torch

from bounds.graph import Graph, Node
from bounds.registry import rules

#: Layer op of a value that only products (no Relu or other split op) consume.
PRODUCT = "Product"


def is_product(node: Node) -> bool:
    """A product of two perturbed values whose operands GenBaB splits (its rule declares an
    "operands" split: Mul, MatMul; McCormick-relaxed by the engine)."""
    registry = rules()
    split = registry.get(node.op).split if node.op in registry else None
    return split is not None and split.search == "operands" and len(node.dynamic_inputs) == 2


def product_uses(graph: Graph) -> dict[str, tuple[tuple[str, int], ...]]:
    """value -> ((product node, operand position), ...) for the operands of products (not the
    graph's input, whose bounds are the region box and are split by input splitting)."""
    inputs = {info.name for info in graph.inputs}
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in graph.nodes:
        if not is_product(node):
            continue
        for pos, value in enumerate(node.dynamic_inputs):
            if value not in inputs:
                uses.setdefault(value, []).append((node.name, pos))
    return {k: tuple(v) for k, v in uses.items()}


def _layout(node: Node, pos: int, t: torch.Tensor) -> torch.Tensor:
    """An operand tensor [B, *shape] in the layout of the node's products (MatMul:
    a -> [B, *, m, k, 1], b -> [B, *, 1, k, p]; Mul: as is, broadcast later)."""
    if node.op == "MatMul":
        return t.unsqueeze(-1) if pos == 0 else t.unsqueeze(-3)
    return t


def _coef_layout(node: Node, a: torch.Tensor) -> torch.Tensor:
    """Coefficients at the node's output [B, S, *out] in the products' layout."""
    return a.unsqueeze(-2) if node.op == "MatMul" else a


def _to_operand(node: Node, pos: int, g: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum per-product gains [B, *products] onto the operand's elements [B, *shape]."""
    if node.op == "MatMul":
        g = g.sum(-1) if pos == 0 else g.sum(-3)
    extra = g.dim() - 1 - len(shape)
    if extra > 0:
        g = g.sum(dim=tuple(range(1, 1 + extra)))
    axes = tuple(i + 1 for i, d in enumerate(shape) if d == 1 and g.shape[i + 1] != 1)
    return g.sum(dim=axes, keepdim=True) if axes else g


def _planes(b: tuple, t_lo, t_up, x, y):
    """McCormick lower and upper plane values at (x, y) for bounds b = (lx, ux, ly, uy)."""
    lx, ux, ly, uy = b
    low = t_lo * (ly * x + lx * y - lx * ly) + (1 - t_lo) * (uy * x + ux * y - ux * uy)
    up = t_up * (uy * x + lx * y - lx * uy) + (1 - t_up) * (ly * x + ux * y - ux * ly)
    return low, up


def _child_gain(parent: tuple, child: tuple, t_lo, t_up, a: torch.Tensor) -> torch.Tensor:
    """[B, S, *products]: A * (child plane - parent plane) at the child box's centre."""
    xc, yc = (child[0] + child[1]) / 2, (child[2] + child[3]) / 2
    p_low, p_up = _planes(tuple(v.unsqueeze(1) for v in parent), t_lo, t_up,
                          xc.unsqueeze(1), yc.unsqueeze(1))
    half = torch.full((), 0.5, dtype=a.dtype, device=a.device)
    c_low, c_up = _planes(tuple(v.unsqueeze(1) for v in child), half, half,
                          xc.unsqueeze(1), yc.unsqueeze(1))
    return torch.relu(a) * (c_low - p_low) + torch.relu(-a) * (p_up - c_up)


def product_score(graph: Graph, bounds: dict, value: str, uses, coefs: dict, alphas: dict,
                  w: torch.Tensor, point: torch.Tensor, heuristic: str) -> torch.Tensor:
    """Score [B, numel(value)] of splitting each element of ``value`` at ``point`` [B, *shape],
    summed over its product ``uses`` (see the module docstring). ``coefs[node]``: backward
    coefficients [B, S, *out] at each product's output; ``w`` [B, S] the open rows."""
    shape = tuple(graph.shape_of(value))
    total = None
    for name, pos in uses:
        node = graph.node(name)
        if name not in coefs:
            continue
        ops = [bounds[v] for v in node.dynamic_inputs]
        lay = [(_layout(node, i, o.lower), _layout(node, i, o.upper)) for i, o in enumerate(ops)]
        parent = (lay[0][0], lay[0][1], lay[1][0], lay[1][1])
        a = _coef_layout(node, coefs[name].to(w.dtype))
        if heuristic == "width":
            gain = a.abs() * ((parent[1] - parent[0]) * (parent[3] - parent[2])).unsqueeze(1)
        else:
            gain = _split_gain(node, name, pos, parent, point, a, alphas)
        gain = torch.nan_to_num(gain, nan=0.0, posinf=0.0, neginf=0.0)
        g = (gain.flatten(2) * w.unsqueeze(-1)).sum(1).reshape(gain.shape[:1] + gain.shape[2:])
        g = _to_operand(node, pos, g, shape).flatten(1)
        total = g if total is None else total + g
    if total is None:
        return torch.zeros((w.shape[0], math.prod(shape)), dtype=w.dtype, device=w.device)
    return total


def _split_gain(node, name, pos, parent, point, a, alphas) -> torch.Tensor:
    """The worse of the two children's :func:`_child_gain` for splitting operand ``pos``."""
    alpha = alphas.get(name)
    if alpha is None:
        t_lo = t_up = torch.full((), 0.5, dtype=a.dtype, device=a.device)
    else:
        al = alpha.to(a.dtype).clamp(0.0, 1.0)
        t_lo, t_up = al[:, :, 0], al[:, :, 1]
    p = _layout(node, pos, point.to(a.dtype))
    lo_i, up_i = (0, 1) if pos == 0 else (2, 3)
    left, right = list(parent), list(parent)
    left[up_i], right[lo_i] = p, p
    gains = [_child_gain(parent, tuple(c), t_lo, t_up, a) for c in (left, right)]
    return torch.minimum(gains[0], gains[1])
