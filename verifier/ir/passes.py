"""Graph simplification passes. Each takes a Graph and returns an equivalent, simpler Graph.

* ``drop_noop_reshapes``: Reshape to the same shape disappears; Reshape of a Reshape reads the
  original value (the ONNX Identity/Dropout nodes never reach the IR: the importer binds them
  through).
* ``clip_to_relu``: Clip(0, inf) is Relu.
* ``fuse_affine_followers``: Linear/Conv followed by Add/Sub/Mul/Div with a constant that varies
  only along the output-feature axis (Linear: last axis; Conv: channel axis) folds into the
  weights and bias. This fuses MatMul+Add, Conv+bias and inference BatchNormalization (which the
  importer emits as Mul+Add).
* ``fold_input_normalisation``: (x - m) / s feeding a Linear/Conv folds into it, when m and s
  vary only along its input-feature axis (Sub into a Conv only without padding, where zero
  padding would otherwise see the shifted values). The Sub/Div first moves past Reshapes.
* ``fuse_gelu``: the exporters' decompositions 0.5 x (1 + erf(x / sqrt 2)) and 0.5 x (1 +
  tanh(sqrt(2 / pi) (x + 0.044715 x^3))) (GPT-2's "gelu_new"), with the products and scalings
  in any order, become one Gelu node, so the bound engines relax GELU as one function instead
  of bounding a product of two perturbed values.
* ``fuse_swish``: x * Sigmoid(x) (SiLU) and x * Sigmoid(a x), a > 0 a constant number, become
  one Swish node (alpha a), for the same reason.
* ``fuse_mish``: x * Tanh(Softplus(x)) becomes one Mish node.
* ``fuse_hard_swish``: x * HardSigmoid(x) and x * Clip(x + 3, 0, 6) / 6 (products and scalings
  in any order) become one HardSwish node.
* ``floor_variances``: a variance mean((x - mean x)^2) (the importer's normalisations, the
  exporters' decomposed LayerNorms) gets a CentredVariance node that floors it at its least
  value over x's box.
* ``drop_dead_nodes``: nodes that no output depends on.
"""

from __future__ import annotations

import math

import numpy as np

from bounds.graph import Graph, Node
from verifier.ir.rewrite import Rewriter, feature_vector

_FOLLOWERS = ("Add", "Sub", "Mul", "Div")


def drop_noop_reshapes(graph: Graph) -> Graph:
    rw = Rewriter(graph)
    for node in rw.iter():
        if node.op != "Reshape":
            continue
        src_shape = rw.shape_of(node.inputs[0])
        if src_shape == node.shape:
            rw.alias(node, node.inputs[0])
            continue
        src = rw.producer(node.inputs[0])
        if src is not None and src.op == "Reshape":
            rw.replace(node, Node(node.name, "Reshape", (src.inputs[0],), node.shape))
    return rw.graph()


def clip_to_relu(graph: Graph) -> Graph:
    rw = Rewriter(graph)
    for node in rw.iter():
        if (node.op == "Clip" and node.attrs.get("min") == 0.0
                and node.attrs.get("max") == float("inf")):
            rw.replace(node, Node(node.name, "Relu", node.inputs, node.shape))
    return rw.graph()


def _fuse_one(src: Node, node: Node) -> Node | None:
    """src (Linear/Conv) followed by node (const Add/Sub/Mul/Div) -> fused src, or None."""
    const_pos = 1 - node.inputs.index(src.name)
    if const_pos not in node.consts or node.shape != src.shape:
        return None
    if node.op in ("Sub", "Div") and const_pos != 1:
        return None
    axis = len(src.shape) - 1 if src.op == "Linear" else 1
    vec = feature_vector(node.consts[const_pos], src.shape, axis)
    if vec is None:
        return None
    w = src.consts[1].astype(np.float64)
    b = src.consts[2].astype(np.float64) if 2 in src.consts else np.zeros(w.shape[0])
    if node.op in ("Mul", "Div"):
        scale = vec if node.op == "Mul" else 1.0 / vec
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = b * scale
    else:
        b = b + vec if node.op == "Add" else b - vec
    consts = {1: w.astype(np.float32), 2: b.astype(np.float32)}
    return Node(src.name, src.op, (src.inputs[0], None, None), src.shape, src.attrs, consts)


def fuse_affine_followers(graph: Graph) -> Graph:
    rw = Rewriter(graph)
    for node in rw.iter():
        if node.op not in _FOLLOWERS or len(node.dynamic_inputs) != 1:
            continue
        src = rw.producer(node.dynamic_inputs[0])
        if src is None or src.op not in ("Linear", "Conv") or not rw.single_use(src.name):
            continue
        fused = _fuse_one(src, node)
        if fused is not None:
            rw.replace(src, fused)
            rw.alias(node, src.name)
    return rw.graph()


def _sink_scalar_through_reshape(rw: Rewriter, node: Node) -> bool:
    """Sub/Div by a constant followed by a Reshape: apply the Reshape first (the constant,
    broadcast to the full shape, is reshaped the same way; a scalar stays a scalar)."""
    consumer = rw.only_consumer(node.name)
    if consumer is None or consumer.op != "Reshape":
        return False
    if rw.shape_of(node.inputs[0]) != node.shape:
        return False
    const = node.consts[1]
    if const.size == 1:
        const = const.reshape((1,) * len(consumer.shape))
    else:
        const = np.broadcast_to(const, node.shape).reshape(consumer.shape).copy()
    moved = Node(consumer.name + "_pre", "Reshape", (node.inputs[0],), consumer.shape)
    op = Node(consumer.name, node.op, (moved.name, None), consumer.shape, {}, {1: const})
    rw.remove(node)
    rw.replace(consumer, op, before=[moved])
    return True


def _fold_into_weighted(rw: Rewriter, node: Node) -> bool:
    target = rw.only_consumer(node.name)
    if target is None or target.op not in ("Linear", "Conv") or target.inputs[0] != node.name:
        return False
    axis = len(node.shape) - 1 if target.op == "Linear" else 1
    vec = feature_vector(node.consts[1], node.shape, axis)
    if vec is None:
        return False
    w = target.consts[1].astype(np.float64)
    b = target.consts[2].astype(np.float64) if 2 in target.consts else np.zeros(w.shape[0])
    expand = (1, -1) + (1,) * (w.ndim - 2)
    if node.op == "Div":
        w = w / vec.reshape(expand)
    else:
        if target.op == "Conv" and any(target.attrs["pads"]):
            return False
        if target.op == "Conv" and target.attrs["group"] != 1:
            return False
        b = b - (w * vec.reshape(expand)).reshape(w.shape[0], -1).sum(axis=1)
    fused = Node(target.name, target.op, (node.inputs[0], None, None), target.shape,
                 target.attrs, {1: w.astype(np.float32), 2: b.astype(np.float32)})
    rw.remove(node)
    rw.replace(target, fused)
    return True


def fold_input_normalisation(graph: Graph) -> Graph:
    for _ in range(8):  # each round folds or moves one Sub/Div per chain
        rw = Rewriter(graph)
        changed = False
        for node in rw.iter():
            if (node.op in ("Sub", "Div") and node.inputs[0] is not None and 1 in node.consts
                    and rw.single_use(node.name)):
                changed |= _fold_into_weighted(rw, node) or _sink_scalar_through_reshape(rw, node)
                if changed:
                    break
        if not changed:
            return graph
        graph = rw.graph()
    return graph


def _const_scalar(node: Node, value: float) -> bool:
    """True when ``node`` has exactly one constant operand, a scalar close to ``value``."""
    c = _scalar_operand(node)
    return c is not None and _close(c, value)


def _close(a: float, b: float) -> bool:
    # float32 constants of the exporters (sqrt 2, sqrt(2 / pi), 0.044715) are within 1e-7
    # relative of the real ones; the allowance of the fused op covers that (fuse_gelu)
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _scalar_operand(node: Node) -> float | None:
    """The value of ``node``'s constant operand when it has exactly one and it is a scalar."""
    if len(node.consts) != 1:
        return None
    (c,) = node.consts.values()
    return float(np.asarray(c).reshape(())) if np.asarray(c).size == 1 else None


def _factors(rw: Rewriter, name: str, x: str, depth: int = 4) -> tuple[float, list[str]]:
    """``name`` as a product: (scalar constant, dynamic factors), descending through Mul nodes
    (and Div by a constant) of ``x``'s shape, but not into ``x`` itself nor below ``depth``
    levels (what is left there is one factor)."""
    node = rw.get(name) if name != x else None
    if node is None or depth == 0 or node.shape != rw.shape_of(x) or not (
            node.op == "Mul" or (node.op == "Div" and 1 in node.consts)):
        return 1.0, [name]
    const = 1.0
    if node.consts:
        c = _scalar_operand(node)
        if c is None or len(node.dynamic_inputs) != 1:
            return 1.0, [name]
        const = 1.0 / c if node.op == "Div" else c
    leaves = []
    for operand in node.dynamic_inputs:
        part = _factors(rw, operand, x, depth - 1)
        const, leaves = const * part[0], leaves + part[1]
    return const, leaves


def _gated_by(rw: Rewriter, node: Node, x: str) -> tuple[float, Node] | None:
    """(k, g) when ``node`` is the product k x g of x, a scalar constant k and one other
    value, g's node."""
    const, leaves = _factors(rw, node.name, x)
    others = [v for v in leaves if v != x]
    if len(leaves) != 2 or len(others) != 1:
        return None
    gate = rw.get(others[0])
    return None if gate is None else (const, gate)


def _polynomial(rw: Rewriter, name: str, x: str, depth: int = 8) -> dict[int, float] | None:
    """``name`` as a polynomial in ``x`` ({degree: coefficient}) through Add, Sub, Neg, Mul,
    Div by a constant and Pow 2 or 3 of ``x``'s shape; None where it is not one."""
    if name == x:
        return {1: 1.0}
    node = rw.get(name)
    if node is None or depth == 0 or node.shape != rw.shape_of(x):
        return None
    parts = [_polynomial(rw, v, x, depth - 1) for v in node.dynamic_inputs]
    if any(p is None for p in parts) or not parts:
        return None
    c = _scalar_operand(node) if node.consts else None
    if node.consts and c is None:
        return None
    if node.op == "Neg":
        return _poly_scale(parts[0], -1.0)
    if node.op == "Pow" and node.attrs.get("exponent") in (2.0, 3.0):
        out = parts[0]
        for _ in range(int(node.attrs["exponent"]) - 1):
            out = _poly_mul(out, parts[0])
        return out
    if node.op in ("Mul", "Div") and c is not None:
        if node.op == "Div" and 1 not in node.consts:
            return None
        return _poly_scale(parts[0], c if node.op == "Mul" else 1.0 / c)
    if node.op == "Mul" and len(parts) == 2:
        return _poly_mul(*parts)
    if node.op in ("Add", "Sub"):
        if c is not None:  # a constant term: x - c or c - x
            first = 0 if 0 in node.consts else 1
            const, dyn = {0: c}, parts[0]
            terms = (const, dyn) if first == 0 else (dyn, const)
        elif len(parts) == 2:
            terms = tuple(parts)
        else:
            return None
        return _poly_add(terms[0], _poly_scale(terms[1], -1.0 if node.op == "Sub" else 1.0))
    return None


def _poly_scale(p: dict, c: float) -> dict:
    return {k: v * c for k, v in p.items()}


def _poly_add(p: dict, q: dict) -> dict:
    out = dict(p)
    for k, v in q.items():
        out[k] = out.get(k, 0.0) + v
    return out


def _poly_mul(p: dict, q: dict) -> dict:
    out: dict[int, float] = {}
    for i, a in p.items():
        for j, b in q.items():
            out[i + j] = out.get(i + j, 0.0) + a * b
    return out


def _poly_is(p: dict | None, want: dict[int, float]) -> bool:
    """Each coefficient within 1e-6 relative of the wanted one (absent terms: within 1e-12;
    GELU's cubic coefficient is 0.036, so an absolute tolerance would be loose there)."""
    return p is not None and all(
        abs(p.get(k, 0.0) - want.get(k, 0.0)) <= max(1e-6 * abs(want.get(k, 0.0)), 1e-12)
        for k in set(p) | set(want))


_SQRT_2_PI = math.sqrt(2.0 / math.pi)
# GELU as 0.5 x (1 + gate(w)): the gate op, its argument w as a polynomial in x, the IR mode
_GELU_FORMS = (("Erf", {1: 2.0**-0.5}, "none"),
               ("Tanh", {1: _SQRT_2_PI, 3: _SQRT_2_PI * 0.044715}, "tanh"))


def _gelu_form(rw: Rewriter, node: Node) -> tuple[str, str] | None:
    """(x, approximate) when ``node`` computes 0.5 x (1 + erf(x / sqrt 2)) or 0.5 x (1 +
    tanh(sqrt(2 / pi) (x + 0.044715 x^3))), in any order of the products and scalings."""
    for x in _product_candidates(rw, node):
        found = _gated_by(rw, node, x)
        if found is None or not _close(found[0], 0.5):
            continue
        add = found[1]
        if add.op != "Add" or not _const_scalar(add, 1.0):
            continue
        gate = rw.get(add.dynamic_inputs[0])
        for op, poly, mode in _GELU_FORMS:
            if gate is not None and gate.op == op and _poly_is(
                    _polynomial(rw, gate.inputs[0], x), poly):
                return x, mode
    return None


def _product_candidates(rw: Rewriter, node: Node, depth: int = 3) -> list[str]:
    """The values a product's factor x may be: operands of the Mul nodes under ``node``."""
    found, stack = [], [(node, depth)]
    while stack:
        cur, d = stack.pop()
        for v in cur.dynamic_inputs:
            found.append(v)
            sub = rw.get(v)
            if sub is not None and sub.op == "Mul" and d > 1:
                stack.append((sub, d - 1))
    return list(dict.fromkeys(found))


Fused = tuple[str, str, dict]  # (x, the curve op of x, its attributes)


def _fuse_curves(graph: Graph, ops: tuple[str, ...], match) -> Graph:
    """Replace each node of ``ops`` that ``match(rw, node)`` reads as a curve of one value x
    (-> (x, op, attrs) or None) by that one node, where x has the node's shape."""
    rw = Rewriter(graph)
    for node in rw.iter():
        found = match(rw, node) if node.op in ops else None
        if found is not None and rw.shape_of(found[0]) == node.shape:
            x, op, attrs = found
            rw.replace(node, Node(node.name, op, (x,), node.shape, attrs))
    return drop_dead_nodes(rw.graph())


def _gelu_match(rw: Rewriter, node: Node) -> Fused | None:
    form = _gelu_form(rw, node)
    return None if form is None else (form[0], "Gelu", {"approximate": form[1]})


def fuse_gelu(graph: Graph) -> Graph:
    return _fuse_curves(graph, ("Mul",), _gelu_match)


def _swish_alpha(rw: Rewriter, x: str, gate: Node) -> float | None:
    """alpha where gate = Sigmoid(x) (1) or Sigmoid(x * alpha), alpha a positive constant
    number (its float32 value, which the runtime multiplies by); None otherwise."""
    if gate.op != "Sigmoid" or gate.shape != rw.shape_of(x):
        return None
    if gate.inputs[0] == x:
        return 1.0
    scale = rw.get(gate.inputs[0])
    if (scale is None or scale.op != "Mul" or scale.dynamic_inputs != (x,)
            or scale.shape != gate.shape):
        return None
    c = _scalar_operand(scale)
    alpha = 0.0 if c is None else float(np.float32(c))
    return alpha if 0 < alpha < float("inf") else None


def _product_pairs(node: Node):
    """(x, other) both ways round for a product of two dynamic values; none otherwise."""
    if node.consts or len(node.dynamic_inputs) != 2:
        return ()
    return (node.inputs, node.inputs[::-1])


def _swish_match(rw: Rewriter, node: Node) -> Fused | None:
    for x, other in _product_pairs(node):
        gate = rw.get(other)
        alpha = _swish_alpha(rw, x, gate) if gate is not None else None
        if alpha is not None:
            return x, "Swish", {"alpha": alpha}
    return None


def fuse_swish(graph: Graph) -> Graph:
    return _fuse_curves(graph, ("Mul",), _swish_match)


def _mish_match(rw: Rewriter, node: Node) -> Fused | None:
    for x, other in _product_pairs(node):
        tanh = rw.get(other)
        soft = rw.get(tanh.inputs[0]) if tanh is not None and tanh.op == "Tanh" else None
        if (soft is not None and soft.op == "Softplus" and soft.inputs[0] == x
                and tanh.shape == node.shape):
            return x, "Mish", {}
    return None


def fuse_mish(graph: Graph) -> Graph:
    return _fuse_curves(graph, ("Mul",), _mish_match)


def _hard_swish_params(rw: Rewriter, node: Node) -> tuple[str, float, float] | None:
    """(x, alpha, beta) when ``node`` computes k x Clip(a x + b, 0, h) with k h = 1 (x *
    HardSigmoid(x); x * Relu6(x + 3) / 6 in any order): x clip(alpha x + beta, 0, 1) with
    alpha = a / h > 0, beta = b / h."""
    for x in _product_candidates(rw, node):
        found = _gated_by(rw, node, x)
        if found is None:
            continue
        const, gate = found
        if gate.op != "Clip" or gate.attrs.get("min") != 0.0:
            continue
        high = gate.attrs.get("max")
        if high is None or not (0 < float(high) < math.inf) or not _close(
                const * float(high), 1.0):
            continue
        poly = _polynomial(rw, gate.inputs[0], x)
        if poly is None or set(poly) - {0, 1} or poly.get(1, 0.0) <= 0:
            continue
        return x, poly[1] / float(high), poly.get(0, 0.0) / float(high)
    return None


def _hard_swish_match(rw: Rewriter, node: Node) -> Fused | None:
    found = _hard_swish_params(rw, node)
    return None if found is None else (found[0], "HardSwish",
                                       {"alpha": found[1], "beta": found[2]})


def fuse_hard_swish(graph: Graph) -> Graph:
    return _fuse_curves(graph, ("Mul", "Div"), _hard_swish_match)


def _centred_input(rw: Rewriter, node: Node) -> str | None:
    """x where ``node`` is ReduceMean(d^2) (Pow 2, or Mul of d by itself) over some axes, with
    d = x - ReduceMean(x) over the same axes (kept): a variance of x; None otherwise."""
    if node.op != "ReduceMean" or not node.attrs.get("axes"):
        return None
    square = rw.get(node.inputs[0])
    if square is None or not (
            (square.op == "Pow" and square.attrs.get("exponent") == 2.0)
            or (square.op == "Mul" and not square.consts
                and square.inputs[0] == square.inputs[1])):
        return None
    centred = rw.get(square.inputs[0])
    if centred is None or centred.op != "Sub" or centred.consts:
        return None
    x, mean = centred.inputs
    mean_node = rw.get(mean)
    if (mean_node is None or mean_node.op != "ReduceMean" or mean_node.inputs[0] != x
            or tuple(mean_node.attrs.get("axes", ())) != tuple(node.attrs["axes"])
            or not mean_node.attrs.get("keepdims") or rw.shape_of(x) != centred.shape):
        return None
    return x


def floor_variances(graph: Graph) -> Graph:
    """Each variance mean((x - mean x)^2) gets a CentredVariance node after it, which floors
    it at its least value over x's box (``bounds.rules.variance``); the mean of squares keeps
    its node under the name plus "/squares"."""
    rw = Rewriter(graph)
    for node in rw.iter():
        x = _centred_input(rw, node)
        if x is None or any(c.op == "CentredVariance" for c in rw.consumers(node.name)):
            continue
        squares = Node(f"{node.name}/squares", node.op, node.inputs, node.shape, node.attrs,
                       node.consts)
        rw.replace(node, Node(node.name, "CentredVariance", (squares.name, x), node.shape,
                              {"axes": tuple(node.attrs["axes"])}), before=[squares])
    return rw.graph()


def drop_dead_nodes(graph: Graph) -> Graph:
    live = {o.name for o in graph.outputs}
    keep = []
    for node in reversed(graph.nodes):
        if node.name in live:
            keep.append(node)
            live.update(node.dynamic_inputs)
    if len(keep) == len(graph.nodes):
        return graph
    return Graph(graph.inputs, graph.outputs, tuple(reversed(keep)), graph.opset, graph.metadata)


PASSES = (drop_noop_reshapes, clip_to_relu, fuse_gelu, fuse_swish, fuse_mish, fuse_hard_swish,
          fuse_affine_followers, fold_input_normalisation, drop_noop_reshapes, floor_variances,
          drop_dead_nodes)


def simplify_graph(graph: Graph) -> Graph:
    """Run every pass in order; the result computes the same function as ``graph``."""
    for simplify in PASSES:
        graph = simplify(graph)
    return graph
