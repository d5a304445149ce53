"""TopK (and so torch.sort, exported as TopK of every element): its values through a sorting
network of compare-exchange layers along the axis, each a max and a min of two gathered
slices (``arithmetic.stacked_extreme``: the forward value is one of the operands exactly, as
onnxruntime's), so the bounds are those of ReduceMax over pairs. The network is Batcher's
odd-even merge sort (log2(n) (log2(n) + 1) / 2 layers), cut to the comparators the first k
outputs depend on. The indices output is not computed: a model that reads it is refused by
name; sorted=0 is taken only for k = 1 (any other order is onnxruntime's choice)."""

from __future__ import annotations

import numpy as np

from verifier.onnx_import.context import (
    ConvertContext,
    Dyn,
    Unavailable,
    normalize_axis,
    unsupported,
)
from verifier.onnx_import.converters.arithmetic import stacked_extreme
from verifier.onnx_import.converters.shape import emit_gather
from verifier.onnx_import.registry import converter


def merge_sort_network(n: int) -> list[list[tuple[int, int]]]:
    """Layers of disjoint comparators (a, b), a < b, that sort n values when each puts the
    value meant to come first at a (Batcher's odd-even merge sort on the next power of two,
    comparators that touch padding dropped: padding sorts last and never moves)."""
    size, layers, p = 1 << max(0, (n - 1).bit_length()), [], 1
    while p < size:
        k = p
        while k >= 1:
            layer = [(i + j, i + j + k) for j in range(k % p, size - k, 2 * k)
                     for i in range(min(k, size - j - k))
                     if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n]
            if layer:
                layers.append(layer)
            k //= 2
        p *= 2
    return layers


def top_network(n: int, k: int) -> list[list[tuple[int, int]]]:
    """The merge sort network's comparators that the first k outputs depend on."""
    needed, kept = set(range(k)), []
    for layer in reversed(merge_sort_network(n)):
        used = [(a, b) for a, b in layer if a in needed or b in needed]
        needed.update(i for pair in used for i in pair)
        if used:
            kept.append(used)
    return kept[::-1]


def _compare_exchange(ctx: ConvertContext, x: Dyn, axis: int, layer, largest: bool) -> Dyn:
    n, count = x.shape[axis], len(layer)
    first_side = emit_gather(ctx, x, [a for a, _ in layer], axis)
    second_side = emit_gather(ctx, x, [b for _, b in layer], axis)
    first = stacked_extreme(ctx, first_side, second_side, largest=largest)
    second = stacked_extreme(ctx, first_side, second_side, largest=not largest)
    shape = list(x.shape)
    shape[axis] = n + 2 * count
    both = ctx.emit("Concat", [x, first, second], tuple(shape), {"axis": axis})
    order = list(range(n))
    for t, (a, b) in enumerate(layer):
        order[a], order[b] = n + t, n + count + t
    return emit_gather(ctx, both, order, axis)


@converter("TopK", 1)
def top_k(ctx: ConvertContext, node) -> None:
    x = ctx.value(node.input[0])
    if ctx.opset >= 10:
        k = ctx.const(node.input[1], f"K of TopK node {node.name!r}")
    else:
        k = ctx.attr(node, "k")
    k = int(np.ravel(np.asarray(k))[0])
    axis = normalize_axis(ctx.attr(node, "axis", -1), x.rank)
    largest, ordered = bool(ctx.attr(node, "largest", 1)), bool(ctx.attr(node, "sorted", 1))
    n = x.shape[axis]
    if not 1 <= k <= n:
        raise unsupported(node, f"k={k} outside 1..{n}")
    if not ordered and k > 1:
        raise unsupported(node, "sorted=0 with k > 1 (the order is the runtime's choice)")
    for layer in top_network(n, k):
        x = _compare_exchange(ctx, x, axis, layer, largest)
    ctx.bind(node.output[0], x if k == n else emit_gather(ctx, x, list(range(k)), axis))
    if len(node.output) > 1 and node.output[1]:
        ctx.bind(node.output[1], Unavailable(unsupported(
            node, "its indices output is read (only the values are imported)")))


for _version in (10, 11):
    converter("TopK", _version)(top_k)
