"""ArgMax decided from pairwise differences: PairArgMax and the ``pair_argmax`` rewrite.

ArgMax's own rule (``discrete.py``) reads only the intervals of its input: index j can win
unless some l_i > u_j. Two scores that move together (a segmentation net's two class scores at
one pixel, both shifted by the same perturbation) have wide, overlapping intervals even where
their difference keeps one sign over the whole box, so that rule decides almost nothing
(carvana UNet, eps 0.004: 0 of 1457 pixels by intervals, 1358 by CROWN bounds of the
differences).

``pair_argmax`` rewrites ArgMax over an axis of n <= MAX_CLASSES classes as PairArgMax(D), D
holding for every pair i < j the difference y_j - y_i of the scores y the ArgMax compares: an
affine node (a 1x1 Conv over channels, else a Linear over the class axis), so the engine
bounds D with CROWN like any value a step op reads, both sides (n (n - 1) / 2 rows per
position). PairArgMax reads b(i, k) = y_i - y_k from D (-D or D) and each index's shortfall
s_k = max over i != k of b(i, k): s_k <= 0 exactly where k is a maximum. Its value is the
first (``last``: the last) index of smallest shortfall, which is ArgMax's winner (ties
included) wherever D holds differences of one y, and a value for any D, so its interval
needs no assumption about D: k can have the smallest shortfall only if low(s_k) <= min_j
high(s_j).

Where the ArgMax's input comes from a Softmax over the same classes through layout ops only
(Transpose, Reshape, Gather and the like; the element behind every element of the input is
found by carrying an index tensor through them), y is the Softmax's input, followed further
back through layout ops to where its class axis lies (a conv output's channels). Softmax keeps
the order of its scores, and a float32 softmax keeps it up to its rounding, which ``margin``
covers: if k is the ArgMax of the computed p, then p_k >= (sum p) / n, so y_k is within ln n
of the row's maximum M, and so is every y_i > y_k; exp of arguments that small, the shared sum
and the division give p_i / p_k >= exp(y_i - y_k) (1 - e)^2 / (1 + e)^2 with e their relative
error (a few float32 ulps in any sane kernel; SOFTMAX_MARGIN = 2**-8 allows e up to about
2**-11, some 8000 ulps). So y_i - y_k > SOFTMAX_MARGIN gives p_i > p_k: the runtime's winner
k has s_k <= margin, and the interval admits every k with low(s_k) <= max(margin, min_j
high(s_j)). The Softmax route needs every ArgMax group to be one whole Softmax row (the same
classes, in one order for all groups); otherwise, and where no Softmax is found, y is the
ArgMax's input itself and the margin 0.

Behind a Softmax, PairArgMax's value may differ from the runtime's at near-ties; only an
attack's candidate could see that, and every candidate is re-checked in onnxruntime.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch

from bounds.engine.constants import node_args
from bounds.graph import Graph, Node, conv_like
from bounds.registry import OpRule, OpTraits, rules
from bounds.rules.common import STEP_FIELDS, concretise_backward
from bounds.types import Interval

MAX_CLASSES = 16
SOFTMAX_MARGIN = 2.0**-8
# Ops that only move or select elements: the index map through them is exact.
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Gather",
                        "Slice", "Identity"})


def pairs(n: int) -> list[tuple[int, int]]:
    """The pairs (i, j), i < j, in D's order: D_q = y_j - y_i."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def pair_weights(n: int) -> np.ndarray:
    """[n (n - 1) / 2, n] rows e_j - e_i, one per pair."""
    w = np.zeros((n * (n - 1) // 2, n), dtype=np.float32)
    for q, (i, j) in enumerate(pairs(n)):
        w[q, i], w[q, j] = -1.0, 1.0
    return w


def _behind(node, d: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[B, *shape, Q]: the pair differences behind every output position (``rows``: the
    position in D, pair axis left out, of each output position)."""
    moved = d.movedim(int(node.attrs["pair_axis"]) + 1, -1)
    flat = moved.reshape(d.shape[0], -1, moved.shape[-1])
    picked = flat.index_select(1, rows.reshape(-1).long())
    return picked.reshape(d.shape[0], *node.shape, moved.shape[-1])


def _shortfalls(node, beats) -> torch.Tensor:
    """[B, *shape, n] in the ArgMax's index order: s_k = max over i != k of beats(i, k),
    how far the best rival of k is above it (beats(i, j): y_i - y_j, or a bound of it);
    s_k <= 0 exactly where k is a maximum."""
    n = int(node.attrs["n"])
    cols = []
    for k in range(n):
        rivals = [beats(i, k) for i in range(n) if i != k]
        cols.append(torch.stack(rivals, -1).amax(-1))
    by_class = torch.stack(cols, -1)
    order = torch.tensor(node.attrs["order"], device=by_class.device)
    return by_class.index_select(-1, order)


def _beats(below: torch.Tensor, above: torch.Tensor, n: int):
    """beats(i, j) = y_i - y_j (or a bound of it) read per pair q of (min(i, j), max(i, j)):
    ``below[..., q]`` where i < j (the value -D_q), ``above[..., q]`` where i > j (D_q).
    Values: (-D, D); lower bounds: (-D.upper, D.lower); upper bounds: (-D.lower, D.upper)."""
    index = {pair: q for q, pair in enumerate(pairs(n))}

    def beats(i: int, j: int) -> torch.Tensor:
        return below[..., index[(i, j)]] if i < j else above[..., index[(j, i)]]
    return beats


def _pick(where: torch.Tensor, last: bool) -> torch.Tensor:
    """The first (``last``: the last) index where ``where``; n / -1 where none is."""
    n = where.shape[-1]
    pos = torch.arange(n, device=where.device, dtype=torch.float64)
    if last:
        return torch.where(where, pos, -1.0).amax(-1)
    return torch.where(where, pos, float(n)).amin(-1)


def _forward(node, args):
    d = _behind(node, args[0], args[1])
    s = _shortfalls(node, _beats(-d, d, int(node.attrs["n"])))
    # the first (last) smallest shortfall: ArgMax's winner wherever D holds differences
    best = s == s.amin(-1, keepdim=True)
    return _pick(best, bool(node.attrs["last"])).to(args[0].dtype)


def _ibp(node, args):
    n = int(node.attrs["n"])
    d = Interval(_behind(node, args[0].lower, args[1]), _behind(node, args[0].upper, args[1]))
    low = _shortfalls(node, _beats(-d.upper, d.lower, n))
    high = _shortfalls(node, _beats(-d.lower, d.upper, n))
    # k can have the smallest shortfall only if low_k <= min_j high_j; behind a Softmax the
    # runtime's winner k has y_i - y_k <= margin for every i (module docstring)
    level = torch.clamp(high.amin(-1, keepdim=True), min=float(node.attrs["margin"]))
    can_win = low <= level
    first, last = _pick(can_win, False), _pick(can_win, True)
    none = first > last  # (no candidate: a NaN bound; then any index is possible)
    first = torch.where(none, 0.0, first).to(d.lower.dtype)
    last = torch.where(none, float(n - 1), last).to(d.lower.dtype)
    return Interval(first, last)


RULES = (
    OpRule("PairArgMax", forward=_forward, ibp=_ibp, backward=concretise_backward,
           traits=OpTraits(),
           doc="ArgMax read from the pairwise differences of the scores (pair_argmax)",
           **STEP_FIELDS),
)


# ---------------------------------------------------------------- the rewrite
def _layout_chain(graph: Graph, name: str) -> tuple[str, list[Node]]:
    """(the value before the layout ops that lead to ``name``, those ops in order)."""
    chain: list[Node] = []
    inputs = {t.name for t in graph.inputs}
    while name not in inputs:
        node = graph.node(name)
        if node.op not in LAYOUT_OPS or node.dynamic_inputs != (node.inputs[0],):
            break
        chain.insert(0, node)
        name = node.inputs[0]
    return name, chain


def _carry(graph: Graph, start: str, chain: list[Node]) -> np.ndarray:
    """For every element of the chain's last value, the flat index of its source in
    ``start`` (an index tensor carried through the layout ops; a Softmax in the chain
    passes it on unchanged: its output element i is the softmax of its input row at i)."""
    shape = graph.shape_of(start)
    probe = torch.arange(math.prod(shape), dtype=torch.float64).reshape(1, *shape)
    registry = rules()
    for node in chain:
        if node.op != "Softmax":
            values = {node.inputs[0]: probe}
            probe = registry.get(node.op, node.name).forward(
                node, node_args(node, values, "cpu", torch.float64))
    return np.rint(probe[0].numpy()).astype(np.int64)


def _class_axis(shape: tuple, groups: np.ndarray) -> int | None:
    """The one axis of ``shape`` along which the elements of every group [G, n] (flat
    indices) differ, all other coordinates shared; None when there is none."""
    coords = np.unravel_index(groups, shape)
    varying = [k for k, c in enumerate(coords) if not (c == c[:, :1]).all()]
    return varying[0] if len(varying) == 1 else None


def _rows(shape: tuple, axis: int, groups: np.ndarray):
    """(row of every group [G] along ``axis`` left out, the class order) when each group
    [G, n] (flat indices into a value of ``shape``) is one whole row along ``axis``, in
    one class order shared by all groups; None otherwise."""
    n = shape[axis]
    if groups.shape[1] != n:
        return None
    coords = np.unravel_index(groups, shape)
    classes = coords[axis]
    rest = tuple(c for k, c in enumerate(coords) if k != axis)
    others = tuple(d for k, d in enumerate(shape) if k != axis)
    rows = np.ravel_multi_index(rest, others) if rest else np.zeros_like(groups)
    order = classes[0]
    if (not (rows == rows[:, :1]).all() or not (classes == order).all()
            or sorted(order.tolist()) != list(range(n))):
        return None
    return rows[:, 0], tuple(int(c) for c in order)


def _groups(idx: np.ndarray, axis: int) -> np.ndarray:
    """[G, n]: the n elements of every ArgMax group (``axis`` of ``idx``), output order."""
    return np.moveaxis(idx, axis, -1).reshape(-1, idx.shape[axis])


def _behind_softmax(graph: Graph, start: str, chain: list[Node], axis: int) -> list | None:
    """The layout chain from the scores before a Softmax to the ArgMax's input, Softmax
    included, when ``start`` is a Softmax whose whole rows are the ArgMax's groups."""
    if start in {t.name for t in graph.inputs}:
        return None
    soft = graph.node(start)
    if soft.op != "Softmax" or not soft.dynamic_inputs:
        return None
    groups = _groups(_carry(graph, start, chain), axis)
    if _rows(soft.shape, int(soft.attrs["axis"]), groups) is None:
        return None
    first, before = _layout_chain(graph, soft.inputs[0])
    return [first, [*before, soft, *chain]]


def _source(graph: Graph, node: Node):
    """(the scores z the differences are taken of, their class axis, the margin, the row of
    z behind every ArgMax group, the class order), or None where no class axis is found.
    Tried in order: the scores before a Softmax (with the margin), the value before the
    layout ops, the ArgMax's input itself."""
    axis, x = int(node.attrs["axis"]), node.inputs[0]
    start, chain = _layout_chain(graph, x)
    soft = _behind_softmax(graph, start, chain, axis)
    routes = [] if soft is None else [(*soft, SOFTMAX_MARGIN)]
    routes += [(start, chain, 0.0), (x, [], 0.0)]
    for z, steps, margin in routes:
        groups = _groups(_carry(graph, z, steps), axis)
        shape = graph.shape_of(z)
        cls = _class_axis(shape, groups)
        found = None if cls is None else _rows(shape, cls, groups)
        if found is not None:
            return z, cls, margin, *found
    return None


def _differences(graph: Graph, z: str, axis: int, n: int, p: str) -> tuple[list[Node], int]:
    """Nodes computing every pair difference of ``z`` along ``axis`` (the last one named
    ``{p}/diff``) and the axis of E that holds the pairs: a 1x1 Conv where ``axis`` is the
    channel axis of a value the graph's convolutions share the rank of (CROWN starts its
    rows there as windows), else a Linear over ``axis`` moved last."""
    shape, count, w = graph.shape_of(z), n * (n - 1) // 2, pair_weights(n)
    if axis == 1 and conv_like(graph, z):
        spatial = len(shape) - 2
        conv = Node(f"{p}/diff", "Conv", (z, None), (shape[0], count, *shape[2:]),
                    {"strides": (1,) * spatial, "dilations": (1,) * spatial, "group": 1,
                     "pads": (0,) * (2 * spatial)},
                    {1: w.reshape(count, n, *([1] * spatial))})
        return [conv], 1
    perm = [k for k in range(len(shape)) if k != axis] + [axis]
    moved = tuple(shape[k] for k in perm)
    nodes, cur = [], z
    if axis != len(shape) - 1:
        nodes.append(Node(f"{p}/in", "Transpose", (cur,), moved, {"perm": tuple(perm)}))
        cur = f"{p}/in"
    nodes.append(Node(f"{p}/diff", "Linear", (cur, None), (*moved[:-1], count), {}, {1: w}))
    return nodes, len(moved) - 1


def _rewrite_one(graph: Graph, node: Node) -> list[Node] | None:
    found = _source(graph, node)
    if found is None:
        return None
    z, axis, margin, rows, order = found
    p = f"{node.name}/pairs"
    nodes, pair_axis = _differences(graph, z, axis, len(order), p)
    nodes.append(Node(node.name, "PairArgMax", (f"{p}/diff", None), node.shape,
                      {"n": len(order), "order": order, "margin": margin,
                       "last": int(node.attrs.get("last", 0)), "pair_axis": pair_axis},
                      {1: rows.reshape(node.shape).astype(np.int64)}))
    return nodes


def _live(nodes: list[Node], outputs) -> list[Node]:
    """``nodes`` without those no graph output depends on."""
    needed = {t.name for t in outputs}
    keep = []
    for node in reversed(nodes):
        if node.name in needed:
            keep.append(node)
            needed.update(node.dynamic_inputs)
    return keep[::-1]


_REWRITTEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pair_argmax(graph: Graph) -> Graph:
    """``graph`` with every ArgMax over 2..MAX_CLASSES classes of a dynamic value rewritten
    as PairArgMax of the score differences (module docstring), and the values nothing reads
    any more dropped; the same graph object when there is no such ArgMax. Cached per graph."""
    hit = _REWRITTEN.get(graph)
    if hit is not None:
        return hit
    nodes, changed = [], False
    for node in graph.nodes:
        classes = (graph.shape_of(node.inputs[0])[int(node.attrs["axis"])]
                   if node.op == "ArgMax" and node.dynamic_inputs else 0)
        rewritten = _rewrite_one(graph, node) if 2 <= classes <= MAX_CLASSES else None
        if rewritten is None:
            nodes.append(node)
        else:
            nodes += rewritten
            changed = True
    out = Graph(graph.inputs, graph.outputs, tuple(_live(nodes, graph.outputs)), graph.opset,
                graph.metadata) if changed else graph
    _REWRITTEN[graph] = out
    return out
