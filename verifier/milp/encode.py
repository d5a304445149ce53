"""Encode an IR graph over an input box as a MILP (``MilpModel``), node by node.

* Affine nodes (Linear, Conv, Reshape, Add/Sub with constants, ... : whatever the registry marks
  affine) are encoded exactly: the node's own ``forward`` applied to the columns of its input
  expression gives its linear part, applied to the constant part gives its offset.
* Ops whose rule's ``milp`` is "kinks" or "window_max" (Relu, LeakyRelu, Abs, Clip, MaxPool,
  ReduceMax): exact big-M encodings (activations.py) whose constants come from our (sound)
  CROWN intermediate bounds, so they cut off no reachable point; stable neurons need no binary.
  "argmax" and "leaves" (ArgMax, a tree ensemble's TreeLeaves): one binary per candidate the
  bounds leave possible (choices.py).
* Ops whose rule's ``milp`` is "relaxed" (Sigmoid, Tanh, ...): the rule's linear planes at the
  node's input bounds (a sound outer relaxation; ``Encoding.exact`` is then False and a MILP
  point is only a candidate).
* Float32 rounding: with ``float_errors`` each node whose rounding model (bounds/engine/rounding)
  allows an error |e| <= delta gets a fresh variable z with ``x - delta <= z <= x + delta``
  For dot-product nodes (Linear, Conv, ...) the allowance gamma(n+1) (|W| |x| + |b|) is kept as
  an affine expression of the input (|x| = x after a ReLU), far tighter than its interval value.
  The MILP then over-approximates every float32 execution, as the bound engines do.
Any other op (Softmax, products of two variables, ...) raises ``MilpUnsupportedError``, which
callers turn into ``unknown``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bounds.engine.constants import as_tensor
from bounds.engine.deadline import DeadlineExceeded, check_deadline, checked, time_left
from bounds.engine.rounding import gamma, reduction_length
from bounds.graph import Graph, Node
from bounds.registry import Rounding, rules
from bounds.rules.arithmetic import node_is_affine
from verifier.milp import activations as act
from verifier.milp import choices
from verifier.milp.activations import combine
from verifier.milp.model import INF, Expr, MilpModel, sparse_module, union_idx

DTYPE = torch.float64


class MilpUnsupportedError(NotImplementedError):
    """The graph holds an op the MILP encoding does not handle (names the op and node)."""


@dataclass
class Encoding:
    """The model, the input columns and the flattened output expression."""

    model: MilpModel
    inputs: np.ndarray  # column indices of the flattened input
    output: Expr
    n_unstable: int  # binaries of the piecewise-linear ops
    exact: bool = True  # False when some op is only relaxed (a MILP point is then a candidate)


def unsupported_ops(graph: Graph) -> list[str]:
    """The ops of ``graph`` the encoding cannot handle (empty when it can encode all)."""
    return _unsupported(graph.nodes)


def _unsupported(nodes) -> list[str]:
    registry = rules()
    bad = []
    for node in nodes:
        if act.is_piecewise(node):
            continue
        rule = registry.get(node.op, node.name) if node.op in registry else None
        if rule is None or not (node_is_affine(node, rule) or act.can_relax(node)):
            bad.append(node.op)
    return sorted(set(bad))


def is_exact(graph: Graph) -> bool:
    """Whether the encoding of ``graph`` is exact (no op only relaxed)."""
    registry = rules()
    return all(act.is_piecewise(node) or node_is_affine(node, registry.get(node.op, node.name))
               for node in graph.nodes)


def check_supported(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise MilpUnsupportedError("MILP encoding needs one graph input and one output")
    bad = unsupported_ops(graph)
    if bad:
        raise MilpUnsupportedError(f"MILP encoding does not support op(s): {', '.join(bad)}")


def _affine(graph: Graph, node: Node, values: dict[str, Expr]) -> Expr:
    """Exact encoding of an affine node: its ``forward`` applied to basis vectors gives its
    linear part (chunk by chunk, kept sparse), applied to the constant part its offset. The
    basis is the input expression's columns, or, for one input with fewer positions than
    columns, the input's positions (the node's Jacobian, then multiplied by the expression:
    a conv layer after a wide Relu layer reads a few of its thousands of fresh variables)."""
    rule = rules().get(node.op, node.name)
    exprs = [values[n] for n in node.dynamic_inputs]
    idx = union_idx(exprs)
    shapes = [graph.shape_of(n) for n in node.dynamic_inputs]

    def apply(dynamic):
        out, it = [], iter(dynamic)
        for pos, name in enumerate(node.inputs):
            if name is None:
                const = node.consts.get(pos)
                out.append(None if const is None else as_tensor(const, "cpu", DTYPE))
            else:
                out.append(next(it))
        with torch.no_grad():
            return rule.forward(node, out)

    offset = apply([torch.as_tensor(e.const).reshape(1, *s)
                    for e, s in zip(exprs, shapes, strict=True)]).reshape(-1).numpy()
    offset = offset.astype(np.float64)
    if len(idx) == 0:
        return Expr.constant(offset)
    zero = apply([torch.zeros(1, *s, dtype=DTYPE) for s in shapes]).reshape(1, -1)
    n_in = math.prod(shapes[0])
    if len(exprs) == 1 and n_in < len(idx):
        eye = sparse_module().identity(n_in, format="csr")
        jacobian = _linear_part(apply, zero, [eye], shapes)
        return Expr(idx, (jacobian @ exprs[0].on(idx)).tocsr(), offset)
    return Expr(idx, _linear_part(apply, zero, [e.on(idx) for e in exprs], shapes), offset)


# Dense elements of one chunk of basis vectors pushed through a node (inputs plus outputs):
# about 160 MB in float64.
CHUNK_ELEMENTS = 2e7


def _linear_part(apply, zero: torch.Tensor, columns: list, shapes: list):
    """The sparse matrix [outputs, k] of the node's linear part on the k basis vectors whose
    coordinates (one sparse [positions, k] matrix per input) are ``columns``. Chunks hold at
    most CHUNK_ELEMENTS and are sized to about CHUNK_TARGET_S from the first ones' pace; a
    chunk that would not end before the engines' deadline is not started (one chunk of a
    TinyYOLO conv, sized by memory alone, took seconds: a 7 s ``--method milp`` run was
    abandoned in it)."""
    sp = sparse_module()
    k = columns[0].shape[1]
    n_out = zero.shape[1]
    width = sum(math.prod(s) for s in shapes) + n_out
    most = max(1, min(k, int(CHUNK_ELEMENTS // width)))
    pieces, start, size, per_vector = [], 0, min(FIRST_CHUNK, most), 0.0
    while start < k:
        size = min(size, k - start)
        if per_vector * size > time_left():
            raise DeadlineExceeded(f"the MILP encoding would not end in time ({k - start} "
                                   f"basis vectors left at {per_vector:.2g} s each)")
        check_deadline()
        began = time.monotonic()
        cols = slice(start, start + size)
        basis = [torch.as_tensor(c[:, cols].T.toarray()).reshape(-1, *s)
                 for c, s in zip(columns, shapes, strict=True)]
        linear = (apply(basis).reshape(size, n_out) - zero).numpy()
        linear[np.abs(linear) < 1e-300] = 0.0
        pieces.append(sp.csr_matrix(linear.T))
        per_vector = (time.monotonic() - began) / size  # the latest pace: one slow chunk
        # (a collection, a first allocation) would otherwise shrink every later one
        start += size
        size = max(1, min(most, int(CHUNK_TARGET_S / max(per_vector, 1e-9))))
    return sp.hstack(pieces, format="csr")


# Basis vectors of a node's first chunk, and the seconds a chunk is sized to after it.
FIRST_CHUNK = 4
CHUNK_TARGET_S = 0.2


def _materialise(model: MilpModel, x: Expr, lower, upper, err: Expr | np.ndarray) -> Expr:
    """A fresh variable z per position with |z - x| <= err (a bounded rounding error); ``err``
    is a constant array or an affine expression that is nonnegative wherever it matters."""
    z = model.add_vars(lower, upper)  # fresh columns: after every column of x
    sp = sparse_module()
    diff = Expr(np.concatenate([x.idx, z]),
                sp.hstack([x.mat, -sp.identity(x.size)], format="csr"), x.const)
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
    rule = rules().get(node.op, node.name)
    if rule.rounding is not Rounding.DOT or len(node.dynamic_inputs) != 1 or not node.consts:
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
           float_errors: bool = True, upto: str | None = None, search: bool = False
           ) -> Encoding:
    """MILP of ``graph`` for flattened inputs in [lower, upper].

    ``bounds`` maps value names to sound ``Interval``s with batch 1 (e.g. ``bound_spec(...)
    .intermediate``, rounding included) and ``deltas`` to rounding allowances
    (``bound_spec(...).deltas``).
    ``upto``: stop after that value, which becomes the encoding's output (bound refinement).
    ``search``: the choosing ops keep a margin from their boundaries (``choices``: points
    the runtime takes the same way; no longer a superset, so never for a proof).
    """
    if upto is None:
        check_supported(graph)
    else:
        names = [n.name for n in graph.nodes]
        bad = _unsupported(graph.nodes[:names.index(upto) + 1])
        if bad:
            raise MilpUnsupportedError(f"MILP encoding does not support op(s): {', '.join(bad)}")
    model = MilpModel()
    x_idx = model.add_vars(lower, upper, name="x")
    values = {graph.inputs[0].name: Expr.variables(x_idx)}
    out_name = graph.outputs[0].name
    n_unstable, exact = 0, True
    pace = _Pace()
    for node in checked(graph.nodes):  # the engines' deadline, where one is set
        piecewise = act.is_piecewise(node)
        affine = not piecewise and node_is_affine(node, rules().get(node.op, node.name))
        work = _work(graph, node, values, affine)
        if work > MAX_WORK_ELEMENTS:
            raise MilpUnsupportedError(
                f"the MILP encoding is too large: {node.name!r} needs {work:.3g} elements of "
                f"basis vectors pushed through it (at most {MAX_WORK_ELEMENTS:.0e})")
        # Affine nodes keep to the deadline chunk by chunk (``_linear_part``); their element
        # counts say little of their time (Convnet_avgpool: 1.9e7 in 0.53 s for the conv,
        # 5.7e8 in 4.5 s for the pooling, which the conv's pace put at 16.4 s: a 20 s run
        # gave up on it in 3 s)
        if not affine:
            pace.before(work)
        if piecewise:
            expr, k = _piecewise(graph, node, model, values, bounds,
                                 SEARCH_MARGIN if search else 0.0)
            n_unstable += k
        elif affine:
            expr = _affine(graph, node, values)
        else:
            src = node.dynamic_inputs[0]
            expr = act.relaxed(model, node, values[src], _flat(bounds[src].lower),
                               _flat(bounds[src].upper), _flat(bounds[node.name].lower),
                               _flat(bounds[node.name].upper))
            exact = False
        delta = _flat(deltas.get(node.name)) if float_errors else None
        if delta is not None and np.any(delta > 0):
            box = bounds[node.name]
            err = _dot_error(graph, node, values, bounds)
            expr = _materialise(model, expr, _flat(box.lower), _flat(box.upper),
                                delta if err is None else err)
        values[node.name] = expr
        if not affine:
            pace.after()
        nonzeros = model.nnz + expr.mat.nnz
        if nonzeros > MAX_NONZEROS:
            raise MilpUnsupportedError(
                f"the MILP encoding is too large: {nonzeros:.3g} nonzeros after "
                f"{node.name!r} (at most {MAX_NONZEROS:.0e})")
        if node.name == upto:
            out_name = upto
            break
    return Encoding(model, x_idx, values[out_name], n_unstable, exact)


# Elements of the dense chunks of basis vectors one node may push (``_work``): at the pace of
# numpy and torch on this CPU, tens of seconds (oval21 base's largest node: 2.9e7).
MAX_WORK_ELEMENTS = 2e9
# Nonzeros of the model and the newest expression: beyond this, memory runs to GBs and no
# solver ends within a verification's time (HiGHS: minutes at 1e6 on mnistfc 256x4).
MAX_NONZEROS = 2e7


def _work(graph: Graph, node: Node, values: dict, affine: bool) -> float:
    """The elements an ``affine`` node's encoding pushes through it (``_affine``: basis
    vectors times the node's inputs and outputs), or for any other node the entries of its
    input expression and its outputs."""
    exprs = [values[n] for n in node.dynamic_inputs]
    n_out = math.prod(node.shape)
    if not affine:
        return float(sum(e.mat.nnz for e in exprs) + n_out)
    n_in = [math.prod(graph.shape_of(n)) for n in node.dynamic_inputs]
    k = len(union_idx(exprs))
    if len(exprs) == 1:
        k = min(k, n_in[0])
    return float(k) * (sum(n_in) + n_out)


class _Pace:
    """A node's encoding costs about its ``_work``: a piecewise or relaxed node starts only
    when that, at the pace of such nodes before it, fits in the engines' time left (the
    dense encoder took 123 s on verivital's Convnet_avgpool, up to 40 s in one node, where
    a 20 s ``--method milp`` run was abandoned by the watchdog; affine nodes now keep to the
    deadline chunk by chunk)."""

    def __init__(self) -> None:
        self.done = 0.0  # elements
        self.spent = 0.0  # seconds
        self.elements = 0.0
        self.start = 0.0

    def before(self, elements: float) -> None:
        if self.spent > 0 and elements * self.spent / self.done > time_left():
            raise DeadlineExceeded(f"the MILP encoding would not end in time "
                                   f"({elements:.3g} elements in the next node)")
        self.elements, self.start = elements, time.monotonic()

    def after(self) -> None:
        self.done += self.elements
        self.spent += time.monotonic() - self.start


# The search encoding's relative distance from the choosing ops' boundaries: ORT sums a tree
# ensemble's leaf values in float32 (relative error ~1e-7 per tree) and rounds the point.
SEARCH_MARGIN = 1e-5


def _piecewise(graph: Graph, node: Node, model: MilpModel, values: dict, bounds: dict,
               margin: float = 0.0):
    """(expression, #binaries) of a piecewise-linear node (see activations.py)."""
    src = node.dynamic_inputs[0]
    x, lo, hi = values[src], _flat(bounds[src].lower), _flat(bounds[src].upper)
    milp = rules().get(node.op, node.name).milp
    if milp.kind == "kinks":
        return act.kinks(model, x, lo, hi, milp.kinks(node.attrs))
    if milp.kind == "argmax":
        return choices.argmax(model, node, x, lo, hi, graph.shape_of(src), margin)
    if milp.kind == "leaves":
        return choices.leaves(model, node, x, lo, hi, margin)
    return act.maximum(model, x, lo, hi, act.windows(graph, node))
