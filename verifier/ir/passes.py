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
* ``fuse_gelu``: the exporters' decomposition 0.5 * (x * (1 + erf(x / sqrt 2))) becomes one Gelu
  node, so the bound engines relax GELU as one function instead of bounding a product of two
  perturbed values.
* ``fuse_swish``: x * Sigmoid(x) (SiLU) and x * Sigmoid(a x), a > 0 a constant number, become
  one Swish node (alpha a), for the same reason.
* ``drop_dead_nodes``: nodes that no output depends on.
"""

from __future__ import annotations

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
    if len(node.consts) != 1:
        return False
    (c,) = node.consts.values()
    return c.size == 1 and abs(float(c.reshape(())) - value) <= 1e-6 * max(1.0, abs(value))


def _gelu_input(rw: Rewriter, prod: Node) -> str | None:
    """For prod = x * (1 + erf(x / sqrt 2)) (operands in either order), return x."""
    if prod.op != "Mul" or len(prod.dynamic_inputs) != 2:
        return None
    for x, other in (prod.inputs, prod.inputs[::-1]):
        add = rw.get(other)
        if add is None or add.op != "Add" or not _const_scalar(add, 1.0):
            continue
        erf = rw.get(add.dynamic_inputs[0])
        if erf is None or erf.op != "Erf":
            continue
        scale = rw.get(erf.inputs[0])
        if scale is not None and scale.dynamic_inputs == (x,) and (
                (scale.op == "Div" and 1 in scale.consts and _const_scalar(scale, 2 ** 0.5))
                or (scale.op == "Mul" and _const_scalar(scale, 2 ** -0.5))):
            return x
    return None


def fuse_gelu(graph: Graph) -> Graph:
    rw = Rewriter(graph)
    for node in rw.iter():
        if node.op != "Mul" or len(node.dynamic_inputs) != 1 or not _const_scalar(node, 0.5):
            continue
        prod = rw.get(node.dynamic_inputs[0])
        x = _gelu_input(rw, prod) if prod is not None and rw.single_use(prod.name) else None
        if x is not None and rw.shape_of(x) == node.shape:
            rw.replace(node, Node(node.name, "Gelu", (x,), node.shape, {"approximate": "none"}))
    return drop_dead_nodes(rw.graph())


def _swish_alpha(rw: Rewriter, x: str, gate: Node) -> float | None:
    """alpha where gate = Sigmoid(x) (1) or Sigmoid(x * alpha), alpha a positive constant
    number (its float32 value, which the runtime multiplies by); None otherwise."""
    if gate.op != "Sigmoid" or gate.shape != rw.shape_of(x):
        return None
    if gate.inputs[0] == x:
        return 1.0
    scale = rw.get(gate.inputs[0])
    if (scale is None or scale.op != "Mul" or scale.dynamic_inputs != (x,)
            or len(scale.consts) != 1 or scale.shape != gate.shape):
        return None
    (c,) = scale.consts.values()
    alpha = float(np.float32(np.asarray(c).reshape(-1)[0])) if np.asarray(c).size == 1 else 0.0
    return alpha if 0 < alpha < float("inf") else None


def fuse_swish(graph: Graph) -> Graph:
    rw = Rewriter(graph)
    for node in rw.iter():
        if node.op != "Mul" or node.consts or len(node.dynamic_inputs) != 2:
            continue
        for x, other in (node.inputs, node.inputs[::-1]):
            gate = rw.get(other)
            alpha = _swish_alpha(rw, x, gate) if gate is not None else None
            if alpha is not None and rw.shape_of(x) == node.shape:
                rw.replace(node, Node(node.name, "Swish", (x,), node.shape, {"alpha": alpha}))
                break
    return drop_dead_nodes(rw.graph())


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


PASSES = (drop_noop_reshapes, clip_to_relu, fuse_gelu, fuse_swish, fuse_affine_followers,
          fold_input_normalisation, drop_noop_reshapes, drop_dead_nodes)


def simplify_graph(graph: Graph) -> Graph:
    """Run every pass in order; the result computes the same function as ``graph``."""
    for simplify in PASSES:
        graph = simplify(graph)
    return graph
