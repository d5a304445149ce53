"""What the bound engines need to know about a graph's structure (no tensors here): which
values relaxations need bounds for, which values IBP already bounds exactly, where CROWN may
concretise instead of relaxing, and how large a backward pass's coefficients get."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bounds.graph import Graph, Node
from bounds.registry import Kinks, rules
from bounds.rules.arithmetic import node_is_affine
from bounds.rules.common import concretise_backward


def concretises(node: Node, rule) -> bool:
    """Whether CROWN's backward pass replaces the node's output by its interval: no
    elementwise relaxation, not affine, and no backward step of its own (none, or
    ``concretise_backward``: the piecewise-constant ops)."""
    return (not (rule.relax is not None and rule.traits.elementwise)
            and not node_is_affine(node, rule)
            and (rule.backward is None or rule.backward is concretise_backward))


def is_relaxed(node: Node, rule) -> bool:
    """True when CROWN's step through ``node`` depends on its inputs' bounds: an elementwise
    ``relax`` rule, or a non-affine node with its own ``backward`` (window max, products)."""
    if rule.relax is not None:
        return True
    return rule.backward is not None and not node_is_affine(node, rule)


def relaxed_inputs(graph: Graph) -> list[str]:
    """Values whose bounds a relaxation needs (inputs of nodes that CROWN relaxes)."""
    registry = rules()
    needed = []
    for node in graph.nodes:
        rule = registry.get(node.op, node.name)
        if node.dynamic_inputs and is_relaxed(node, rule):
            needed.extend(node.dynamic_inputs if rule.relax is None else node.dynamic_inputs[:1])
    return list(dict.fromkeys(needed))


def window_and_product_nodes(graph: Graph, before: str | None = None) -> list[str]:
    """Nodes with a structured alpha (window max, products of two perturbed values; upstream of
    ``before``): where CROWN may concretise instead of relaxing. (Doing so for intermediate
    bounds too was measured to change nothing on the test networks, so only the final bound
    does it.)"""
    registry = rules()
    names = []
    for node in graph.nodes:
        if node.name == before:
            break
        spec = registry.get(node.op, node.name).alpha
        if spec is not None and spec.structured and spec.applies(node):
            names.append(node.name)
    return names


def values_ibp_bounds_exactly(graph: Graph) -> set[str]:
    """Values whose IBP interval is already their exact range, so CROWN cannot tighten it.

    A box stays a box under moves and per-coordinate affine maps; one affine map of a box has
    exact IBP bounds per coordinate (each coordinate's range is attained), and so does an
    elementwise relaxed function of such a coordinate. A second mixing map (Linear after Linear)
    is not exact under IBP and gets refined.
    """
    registry = rules()
    box = {graph.inputs[0].name}
    exact = set(box)
    for node in graph.nodes:
        rule = registry.get(node.op, node.name)
        ins = node.dynamic_inputs
        if ins and concretises(node, rule):
            # CROWN meets the node's output as a box of its interval: no pass through it can
            # tighten the interval, nor (like the input box) the exact ranges after it
            exact.add(node.name)
            box.add(node.name)
            continue
        if len(ins) != 1 or ins[0] not in exact:
            continue
        if rule.traits.box_preserving and node_is_affine(node, rule):
            exact.add(node.name)  # per coordinate: exact ranges stay exact
            if ins[0] in box and math.prod(graph.shape_of(ins[0])) == math.prod(node.shape):
                box.add(node.name)  # (a broadcast copy would make coordinates dependent)
        elif ins[0] in box and node_is_affine(node, rule):
            exact.add(node.name)
        elif rule.relax is not None and rule.traits.elementwise:
            exact.add(node.name)
            if ins[0] in box:  # a function of each coordinate alone: still independent
                box.add(node.name)
    return exact


def positionwise(node: Node) -> bool:
    """Each output position of ``node`` is a function of one position of its one dynamic
    input: an elementwise relaxed op, or a per-coordinate affine map or a move. Its IBP
    interval from its input's bounds is the exact range over them, and a CROWN row of the
    output passes through one lower (upper) plane to one row of the input, which is no
    tighter than the range: where the input's bounds are at least as tight as its own CROWN
    rows, CROWN cannot tighten the output."""
    if len(node.dynamic_inputs) != 1:
        return False
    rule = _rule(node.op)
    if rule is None:
        return False
    if rule.relax is not None:
        return rule.traits.elementwise
    return rule.traits.box_preserving and node_is_affine(node, rule)


def positionwise_affine(node: Node) -> bool:
    """A positionwise node that no relaxation approximates: a per-coordinate affine map or
    a move (Slice, Reshape, Transpose...)."""
    if not positionwise(node):
        return False
    rule = _rule(node.op)
    return rule is not None and rule.relax is None


def backward_footprint(graph: Graph, node: Node) -> int:
    """Coefficient elements per spec row that the backward step through ``node`` holds: the
    value itself, every product a_ik b_kj of a two-operand MatMul, every window cell of a
    MaxPool."""
    size = math.prod(node.shape)
    if node.op == "MatMul" and len(node.dynamic_inputs) == 2:
        k = graph.shape_of(node.dynamic_inputs[0])[-1]
        return size * k
    if node.op == "MaxPool":
        return size * math.prod(int(k) for k in node.attrs["kernel_shape"])
    return size


def largest_constant(graph: Graph) -> int:
    """The most elements of one constant operand of a node (a weight matrix: each spec row's
    pass multiplies by it)."""
    return max((int(np.size(c)) for n in graph.nodes for c in n.consts.values()), default=0)


def largest_numel(graph: Graph) -> int:
    """The largest coefficient footprint per spec row over the graph's values, its inputs
    included (a graph without nodes, y = x, holds only its input)."""
    inputs = (math.prod(t.shape) for t in graph.inputs)
    return max(*inputs, *(backward_footprint(graph, n) for n in graph.nodes), 1)


def split_search(op: str) -> str | None:
    """Who splits neurons of ``op`` (its rule's ``split.search``): "sign" (sign splits, exact
    once the input's sign is fixed: Relu), "interval" (GenBaB's interval splits), "operands"
    (products), "none"; None for an op without a rule or a split field."""
    rule = _rule(op)
    return None if rule is None or rule.split is None else rule.split.search


def _rule(op: str):
    """``op``'s rule, None where it has none."""
    registry = rules()
    return registry.get(op) if op in registry else None


def linear_by_sign(op: str) -> bool:
    """Whether ``op`` is piecewise linear with every kink at 0 (its MILP form says so: Relu,
    LeakyRelu, Abs): exact once the sign of its input is fixed, so CROWN need not tighten
    the positions where IBP already fixes that sign."""
    rule = _rule(op)
    milp = None if rule is None else rule.milp
    return milp is not None and milp.kind == "kinks" and milp.zero_kink


def kinks_form(op: str, attrs: Mapping) -> Kinks | None:
    """The exact piecewise-linear form const + slope x + sum_k w_k relu(x - a_k) of ``op``
    with node attributes ``attrs``, from its rule's MILP form; None where the op has none."""
    rule = _rule(op)
    milp = None if rule is None else rule.milp
    if milp is None or milp.kind != "kinks" or milp.kinks is None:
        return None
    return milp.kinks(attrs)


def kink_points(op: str, attrs: Mapping) -> tuple[float, ...]:
    """Where ``op`` (with ``attrs``) changes slope, ascending; () where it has no
    piecewise-linear form or no kink (a Clip with min > max is constant)."""
    form = kinks_form(op, attrs)
    return () if form is None else tuple(sorted({float(at) for _, at in form.terms}))


def zero_when_dead(node: Node) -> bool:
    """The op outputs exactly 0 wherever its input is <= 0 (Relu): const = slope = 0 and
    every kink a_k >= 0."""
    form = kinks_form(node.op, node.attrs)
    return form is not None and form.const == 0 and form.slope == 0 and all(
        at >= 0 for _, at in form.terms)


def outputs_relu(node: Node) -> bool:
    """The op outputs relu(x) exactly (0 + 0 x + 1 relu(x - 0)); a LeakyRelu does not."""
    form = kinks_form(node.op, node.attrs)
    return form is not None and form.const == 0 and form.slope == 0 and \
        [(float(w), float(at)) for w, at in form.terms] == [(1.0, 0.0)]
