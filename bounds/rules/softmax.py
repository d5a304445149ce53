"""Softmax(axis): y_i = exp(x_i) / sum_j exp(x_j) over one axis.

IBP: y_i increases in x_i and decreases in every x_j (j != i), so
y_i >= exp(l_i) / (exp(l_i) + sum_{j!=i} exp(u_j)) and y_i <= exp(u_i) / (exp(u_i) +
sum_{j!=i} exp(l_j)). Computed stably by shifting with the maximum upper bound along the axis;
the sums over j != i are formed directly (no cancelling subtraction) and widened by a few ulps.

CROWN: ``expand_softmax`` rewrites each Softmax (axis length <= MAX_EXPANDED_AXIS) as
y_i = 1 / sum_j exp(x_j - x_i): a Linear node for all differences z_ij = x_j - x_i, Exp,
ReduceSum over j, Clip(min=1), Reciprocal. Every piece has a relaxation, the differences get
their own (CROWN-refined) bounds and no product of two perturbed values appears. The exact sum
s_i is >= 1 (the term j = i is exp(0)), so the Clip is the identity on it; it keeps Reciprocal
in its domain when rounding allowances or an overflowing Exp make the sum's interval unbounded.
The last node keeps the Softmax's name, so every other value keeps its name and bounds; its
rounding allowance (Reciprocal's, the same as Softmax's) covers the float32 softmax, the other
pieces only widen the bounds further.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from bounds.engine.box_dot import ends_terms
from bounds.graph import Graph, Node
from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.rules.common import sum_to_batch_spec
from bounds.types import Interval

MAX_EXPANDED_AXIS = 64


def _forward(node, args):
    return torch.softmax(args[0], dim=int(node.attrs["axis"]) + 1)


def _others_sum(e: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_{j != i} e_j for every i along ``dim``, without the cancelling total - e_i."""
    moved = e.movedim(dim, -1)
    n = moved.shape[-1]
    mask = 1.0 - torch.eye(n, dtype=e.dtype, device=e.device)
    return (moved.unsqueeze(-2) * mask).sum(-1).movedim(-1, dim)


def _ibp(node, args):
    x = args[0]
    dim = int(node.attrs["axis"]) + 1
    shift = x.upper.amax(dim=dim, keepdim=True)
    el, eu = torch.exp(x.lower - shift), torch.exp(x.upper - shift)
    lower = el / (el + _others_sum(eu, dim))
    upper = eu / (eu + _others_sum(el, dim))
    # Outward margin for the rounding of exp, the sums and the division (a few ulps each).
    margin = 8 * x.lower.shape[dim] * torch.finfo(x.lower.dtype).eps
    # (inputs unbounded above: exp(inf - inf) is NaN; the range [0, 1] holds regardless)
    lower = torch.nan_to_num(lower * (1 - margin), nan=0.0).clamp_min(0.0)
    upper = torch.nan_to_num(upper * (1 + margin), nan=1.0).clamp_max(1.0)
    return Interval(lower, upper)


def _differences(n: int) -> np.ndarray:
    """[n * n, n] weights with row i * n + j = e_j - e_i (row i * n + i is all zero)."""
    eye = np.eye(n, dtype=np.float32)
    return (eye[None, :, :] - eye[:, None, :]).reshape(n * n, n)


def _expand_one(node: Node) -> list[Node]:
    shape, axis = node.shape, int(node.attrs["axis"])
    n, rank, p = shape[axis], len(shape), f"{node.name}/softmax"
    nodes, cur = [], node.inputs[0]
    perm = [i for i in range(rank) if i != axis] + [axis]
    moved = tuple(shape[i] for i in perm)
    if axis != rank - 1:
        nodes.append(Node(f"{p}/in", "Transpose", (cur,), moved, {"perm": tuple(perm)}))
        cur = f"{p}/in"
    square = (*moved, n)
    nodes += [
        Node(f"{p}/diff", "Linear", (cur, None), (*moved[:-1], n * n), {}, {1: _differences(n)}),
        Node(f"{p}/square", "Reshape", (f"{p}/diff",), square),
        Node(f"{p}/exp", "Exp", (f"{p}/square",), square),
        Node(f"{p}/sum", "ReduceSum", (f"{p}/exp",), moved, {"axes": (rank,), "keepdims": False}),
        Node(f"{p}/atleast1", "Clip", (f"{p}/sum",), moved, {"min": 1.0, "max": None}),
    ]
    if axis == rank - 1:
        return [*nodes, Node(node.name, "Reciprocal", (f"{p}/atleast1",), shape)]
    inverse = tuple(int(i) for i in np.argsort(perm))
    return [*nodes, Node(f"{p}/recip", "Reciprocal", (f"{p}/atleast1",), moved),
            Node(node.name, "Transpose", (f"{p}/recip",), shape, {"perm": inverse})]


def simplex_lower(coef: torch.Tensor, box: Interval, axis: int) -> torch.Tensor:
    """Lower bound [B, S] of coef . y for softmax outputs y (``axis`` static) in ``box``, using
    sum_i y_i = 1 along the axis: min c . y over {l <= y <= u, sum y = 1} is a fractional
    knapsack, solved exactly by filling y from l upwards in order of increasing c. Falls back
    to the interval bound where the box misses the simplex (then any bound is sound) or is
    unbounded. The fact holds for the exact softmax; float32 rounding of the stored value is
    the engine's separate allowance."""
    dim = axis + 2
    c = coef.movedim(dim, -1)
    lo = box.lower.unsqueeze(1).movedim(dim, -1).expand_as(c)
    hi = box.upper.unsqueeze(1).movedim(dim, -1).expand_as(c)
    plain = ends_terms(c, lo, hi).sum(-1)  # (no 0 * inf where the box is unbounded)
    if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
        return sum_to_batch_spec(plain)
    order = c.argsort(-1)
    cap = (hi - lo).clamp(min=0).gather(-1, order)
    mass = (1.0 - lo.sum(-1, keepdim=True)).clamp(min=0)
    fill = torch.minimum((mass - (cap.cumsum(-1) - cap)).clamp(min=0), cap)
    knap = (c * lo).sum(-1) + (c.gather(-1, order) * fill).sum(-1)
    feasible = (lo.sum(-1) <= 1) & (hi.sum(-1) >= 1)
    best = torch.where(feasible, torch.maximum(knap, plain), plain)
    return sum_to_batch_spec(best)  # a rank-1 softmax leaves [B, S] already


_EXPANDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def expand_softmax(graph: Graph) -> Graph:
    """``graph`` with every Softmax of a dynamic input (axis length <= MAX_EXPANDED_AXIS)
    rewritten as Reciprocal(ReduceSum(Exp(x_j - x_i))) (see the module docstring); the same
    graph object when there is none. Cached per graph."""
    hit = _EXPANDED.get(graph)
    if hit is not None:
        return hit
    nodes, changed = [], False
    for node in graph.nodes:
        if (node.op == "Softmax" and node.dynamic_inputs
                and node.shape[int(node.attrs["axis"])] <= MAX_EXPANDED_AXIS):
            nodes += _expand_one(node)
            changed = True
        else:
            nodes.append(node)
    out = Graph(graph.inputs, graph.outputs, tuple(nodes), graph.opset, graph.metadata) \
        if changed else graph
    _EXPANDED[graph] = out
    return out


RULES = (
    OpRule("Softmax", forward=_forward, ibp=_ibp, traits=OpTraits(),
           doc="exp(x_i) / sum_j exp(x_j) along one axis",
           alpha=None, rounding=Rounding.GENERIC, split=None, milp=Milp("none")),
)
