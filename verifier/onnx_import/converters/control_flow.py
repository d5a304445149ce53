"""If on a constant condition, inlined; Loop with a trip count known at import and Scan,
unrolled.

Exporters write control flow whose decisions fold to constants at import: If on shape tests
(torch's LocalResponseNorm, squeezes of possibly-1 axes), and Loop for a Keras RNN layer that
tf2onnx does not map to an ONNX RNN node (SimpleRNN, a custom cell: a TensorFlow while loop
counting to the sequence length, reading step t of the input by a Gather at the counter), or
a scripted torch loop; Scan for RNNs of older converters (keras2onnx, CNTK). The body is
converted once per iteration, its inputs bound to the
iteration number (a constant), the condition and the carried values; nodes that read only
constants fold, so the condition the body computes is a constant, and the loop stops when it
is false. An input-dependent condition or trip count is refused by name. Names defined inside
a subgraph are dropped afterwards: they are not values of the outer graph (onnxruntime cannot
expose them), and ONNX names are unique model-wide, which inlining relies on.
"""

from __future__ import annotations

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import (
    ConvertContext,
    Dyn,
    normalize_axis,
    shape_of,
    tensor_array,
    unsupported,
)
from verifier.onnx_import.converters.shape import emit_slice, join_values, reshape_value
from verifier.onnx_import.registry import converter

# Iterations a Loop or Scan may unroll to, and body nodes copied in all: each iteration copies
# the body into the graph, and import time grows with the copies (about 0.6 ms per node on
# the dev CPU, in the IR passes), which the load-time estimate, made from the file's size,
# cannot see.
MAX_UNROLLED_ITERATIONS = 4096
MAX_UNROLLED_NODES = 8192


def _iteration_cap(body) -> int:
    return max(1, min(MAX_UNROLLED_ITERATIONS, MAX_UNROLLED_NODES // max(1, len(body.node))))


def _defined_names(node, graph, ctx: ConvertContext) -> list[str]:
    """The names ``graph`` defines (its inputs, initializers and node outputs), which must not
    be outer values (ONNX names are unique model-wide; inlining relies on it)."""
    names = [n for n in ([t.name for t in graph.initializer] + [i.name for i in graph.input]
                         + [o for n in graph.node for o in n.output]) if n]
    clash = next((name for name in names if name in ctx.values), None)
    if clash is not None:
        raise ModelError(f"{node.op_type} node {node.name!r}: its subgraph redefines the outer "
                         f"value {clash!r}")
    return names


def _initializers(graph) -> dict[str, np.ndarray]:
    """The subgraph's own constants, read once for all its iterations."""
    return {t.name: tensor_array(t, "initializer").copy() for t in graph.initializer}


def _run_subgraph(ctx: ConvertContext, graph, feeds: list, inits: dict) -> list:
    """The values of ``graph``'s outputs with its inputs bound to ``feeds``."""
    from verifier.onnx_import.loader import convert_nodes

    for vi, value in zip(graph.input, feeds, strict=True):
        ctx.bind(vi.name, value)
    for name, value in inits.items():
        ctx.bind(name, value)
    convert_nodes(ctx, graph.node)
    return [ctx.value(v.name) for v in graph.output]


def _drop_inner(ctx: ConvertContext, names: list[str]) -> None:
    """Forget a subgraph's names (nested subgraphs forgot their own)."""
    for name in names:
        ctx.values.pop(name, None)


@converter("If", 1)
def if_(ctx: ConvertContext, node) -> None:
    """The branch a constant condition picks, inlined. An input-dependent condition is
    refused."""
    cond = ctx.const(node.input[0], f"the condition of If node {node.name!r}")
    if np.size(cond) != 1:
        raise unsupported(node, f"a condition of {np.size(cond)} elements (1 expected)")
    branch = ctx.attr(node, "then_branch" if bool(np.ravel(cond)[0]) else "else_branch")
    if branch is None or len(branch.output) != len(node.output):
        raise ModelError(f"If node {node.name!r}: its branch does not give its "
                         f"{len(node.output)} output(s)")
    names = _defined_names(node, branch, ctx)
    results = _run_subgraph(ctx, branch, [], _initializers(branch))
    _drop_inner(ctx, names)
    for name, value in zip(node.output, results, strict=True):
        if name:
            ctx.bind(name, value)


def _constant_flag(ctx: ConvertContext, node, value, what: str) -> bool:
    if isinstance(value, Dyn):
        raise unsupported(node, f"an input-dependent {what} (the loop is unrolled at import)")
    if np.size(value) != 1:
        raise ModelError(f"Loop node {node.name!r}: its {what} has {np.size(value)} elements "
                         "(1 expected)")
    return bool(np.ravel(value)[0])


def _trip_count(ctx: ConvertContext, node) -> int | None:
    if len(node.input) < 1 or not node.input[0]:
        return None
    count = ctx.value(node.input[0])
    if isinstance(count, Dyn):
        raise unsupported(node, "an input-dependent trip count (the loop is unrolled at import)")
    return int(np.ravel(count)[0])


def _passes_condition(body) -> bool:
    """Whether the body hands its condition on unchanged (a for loop: only the trip count
    stops it). Otherwise the condition it computes may stop a loop whose trip count is huge
    (exporters write INT64_MAX for while loops; onnxruntime honours the body's condition
    whether or not the node has a condition input)."""
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out == cond_in:
        return True
    producer = next((n for n in body.node if cond_out in n.output), None)
    return producer is not None and producer.op_type == "Identity" and \
        list(producer.input) == [cond_in]


@converter("Loop", 1)
def loop(ctx: ConvertContext, node) -> None:
    """Unrolled while the trip count (input 0, optional) and the condition (input 1, then each
    iteration's first body output) allow, at most ``_iteration_cap`` times. Outputs:
    the carried values after the last iteration, then each scan output stacked along a new
    first axis."""
    body = ctx.attr(node, "body")
    carried = [ctx.value(name) for name in node.input[2:]]
    n_scan = -1 if body is None else len(body.output) - 1 - len(carried)
    if n_scan < 0 or len(body.input) != 2 + len(carried):
        raise ModelError(f"Loop node {node.name!r}: its body's inputs and outputs do not match "
                         f"its {len(carried)} carried value(s)")
    trips = _trip_count(ctx, node)
    cap = _iteration_cap(body)
    if trips is not None and trips > cap and _passes_condition(body):
        raise unsupported(node, f"a trip count of {trips}, more than the {cap} iterations of "
                                f"its body unrolled at import")
    cond = (True if len(node.input) < 2 or not node.input[1]
            else _constant_flag(ctx, node, ctx.value(node.input[1]), "loop condition"))
    names, inits = _defined_names(node, body, ctx), _initializers(body)
    scans: list[list] = [[] for _ in range(n_scan)]
    iteration = 0
    while cond and (trips is None or iteration < trips):
        if iteration == cap:
            raise unsupported(node, f"more than the {cap} iterations of its body unrolled at "
                                    "import")
        results = _run_subgraph(ctx, body, [np.array(iteration, dtype=np.int64),
                                            np.array(True), *carried], inits)
        cond = _constant_flag(ctx, node, results[0], "loop condition")
        carried = results[1:1 + len(carried)]
        for k, value in enumerate(results[1 + len(carried):]):
            scans[k].append(value)
        _drop_inner(ctx, names)
        iteration += 1
    if n_scan and iteration == 0:
        raise unsupported(node, "scan outputs of a loop that runs no iteration")
    outputs = list(carried)
    for parts in scans:
        shapes = {tuple(shape_of(p)) for p in parts}
        if len(shapes) != 1:
            raise unsupported(node, f"scan outputs whose shape changes between iterations "
                                    f"({sorted(shapes)})")
        outputs.append(join_values(ctx, parts, 0, new_axis=True))
    for name, value in zip(node.output, outputs, strict=False):
        if name:
            ctx.bind(name, value)


for _version in (11, 13, 16, 19, 21):
    converter("Loop", _version)(loop)


def _scan_step(ctx: ConvertContext, x, axis: int, t: int):
    """Step ``t`` of a scan input: ``x`` at index t along ``axis``, that axis dropped."""
    if isinstance(x, Dyn):
        piece = emit_slice(ctx, x, [axis], [t], [t + 1], [1])
    else:
        piece = np.take(x, [t], axis=axis)
    shape = shape_of(piece)
    return reshape_value(ctx, piece, shape[:axis] + shape[axis + 1:])


@converter("Scan", 9)
def scan(ctx: ConvertContext, node) -> None:
    """Unrolled over the scan inputs' length: the body reads the states and step t of each
    scan input (along its ``scan_input_axes`` entry, from the end where its direction is 1)
    and gives the states and one element of each scan output, stacked along its
    ``scan_output_axes`` entry (in reverse where its direction is 1)."""
    body = ctx.attr(node, "body")
    m = int(ctx.attr(node, "num_scan_inputs", 0))
    values = [ctx.value(name) for name in node.input]
    n = len(values) - m
    k = -1 if body is None else len(body.output) - n
    if m < 1 or n < 0 or k < 0 or len(body.input) != n + m:
        raise ModelError(f"Scan node {node.name!r}: its body's inputs and outputs do not match "
                         f"its {n} state(s) and {m} scan input(s)")
    in_axes = list(ctx.attr(node, "scan_input_axes", [0] * m))
    in_dirs = list(ctx.attr(node, "scan_input_directions", [0] * m))
    out_axes = list(ctx.attr(node, "scan_output_axes", [0] * k))
    out_dirs = list(ctx.attr(node, "scan_output_directions", [0] * k))
    scanned = values[n:]
    in_axes = [normalize_axis(int(a), len(shape_of(x))) for a, x in zip(in_axes, scanned,
                                                                       strict=True)]
    lengths = {shape_of(x)[a] for x, a in zip(scanned, in_axes, strict=True)}
    if len(lengths) != 1:
        raise ModelError(f"Scan node {node.name!r}: scan inputs of lengths {sorted(lengths)}")
    steps = lengths.pop()
    if steps > _iteration_cap(body):
        raise unsupported(node, f"{steps} steps, more than the {_iteration_cap(body)} "
                                "iterations unrolled at import")
    if steps == 0 and k:
        raise unsupported(node, "scan outputs of a scan over no step")
    names, inits = _defined_names(node, body, ctx), _initializers(body)
    states = values[:n]
    collected: list[list] = [[] for _ in range(k)]
    for t in range(steps):
        pieces = [_scan_step(ctx, x, a, steps - 1 - t if d else t)
                  for x, a, d in zip(scanned, in_axes, in_dirs, strict=True)]
        results = _run_subgraph(ctx, body, [*states, *pieces], inits)
        states = results[:n]
        for j, value in enumerate(results[n:]):
            collected[j].append(value)
        _drop_inner(ctx, names)
    outputs = list(states)
    for parts, axis, direction in zip(collected, out_axes, out_dirs, strict=True):
        if direction:
            parts = parts[::-1]
        axis = normalize_axis(int(axis), len(shape_of(parts[0])) + 1)
        outputs.append(join_values(ctx, parts, axis, new_axis=True))
    for name, value in zip(node.output, outputs, strict=False):
        if name:
            ctx.bind(name, value)


for _version in (11, 16, 19, 21):
    converter("Scan", _version)(scan)
