"""Integer input dimensions: inputs the network reads only through a cast to an integer type
(e.g. a patch position, cctsdb_yolo_2023), and how input splitting bisects them.

Such a dimension x enters the network as trunc(x) (ONNX Cast to int), so every box whose
interval of x holds one integer's values gives the network one fixed value there, and the
bounds of the ops it drives (ScatterWindow, DynamicSlice, ...) are exact. A bisection at the
midpoint never gets there: a box whose upper end is an integer m always holds m and values
below it. ``bisect_at_integer`` splits [l, u] at an integer m instead, into [l, prev(m)] and
[m, u], prev(m) the largest float32 below m. The network reads float32: every real x rounds
(to nearest, monotonically) to a float32 value, and every float32 value of [l, u] lies in one
of the two children, so the children cover every input the network can be given from the box.
Only nonnegative boxes are split this way (trunc = floor there); others fall back to the
midpoint.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bounds.graph import Graph
from bounds.registry import rules

# Ops that pass input elements through unchanged (a selection): an integer read after them is
# still an integer read of the input element.
_SELECT = ("Gather", "Slice", "Reshape")


def _reads_int(graph: Graph, name: str) -> bool:
    """Every consumer of value ``name`` reads it only as an integer (its rule's
    ``reads_integer``: a cast to an integer type), or is a selection whose consumers all do
    (recursively)."""
    consumers = graph.consumers(name)
    if not consumers or name in {o.name for o in graph.outputs}:
        return False
    for node in consumers:
        rule = rules().get(node.op, node.name) if node.op in rules() else None
        if rule is not None and rule.reads_integer is not None and rule.reads_integer(node):
            continue
        if node.op in _SELECT and node.inputs[0] == name and _reads_int(graph, node.name):
            continue
        return False
    return True


def _elements(node, n: int) -> np.ndarray | None:
    """Flat input elements a consumer of a rank-1 input reads (None: unknown, all)."""
    if node.op == "Gather" and node.is_const(1) and int(node.attrs.get("axis", 0)) == 0:
        idx = np.asarray(node.consts[1], dtype=np.int64).ravel()
        return np.where(idx < 0, idx + n, idx)
    if node.op == "Slice" and tuple(node.attrs.get("axes", ())) == (0,):
        start, end, step = (int(node.attrs[k][0]) for k in ("starts", "ends", "steps"))
        return np.arange(start, end, step)
    return None


def integer_dims(graph: Graph) -> torch.Tensor:
    """[d] bool: the input elements (of a one-input graph of rank 1) that the network reads
    only through casts to integers; all False otherwise."""
    if len(graph.inputs) != 1:
        return torch.zeros(0, dtype=torch.bool)
    inp = graph.inputs[0]
    n = math.prod(inp.shape)
    found = np.zeros(n, dtype=bool)
    if len(inp.shape) != 1:
        return torch.from_numpy(found)
    other = np.zeros(n, dtype=bool)
    for node in graph.consumers(inp.name):
        elems = _elements(node, n)
        if elems is not None and node.op == "Gather" and _reads_int(graph, node.name):
            found[elems] = True
        elif elems is not None:
            other[elems] = True
        else:
            other[:] = True
    return torch.from_numpy(found & ~other)


def below(m: torch.Tensor) -> torch.Tensor:
    """The largest float32 value below each m (returned in m's dtype)."""
    m32 = m.to(torch.float32)
    return torch.nextafter(m32, torch.full_like(m32, -math.inf)).to(m.dtype)


def integer_open(lower: torch.Tensor, upper: torch.Tensor, integer: torch.Tensor
                 ) -> torch.Tensor:
    """[N, d] bool: integer dimensions whose box still holds two integers' values
    (nonnegative boxes; others are left to midpoint bisection)."""
    a, b = torch.floor(lower), torch.floor(upper)
    return integer.unsqueeze(0) & (lower >= 0) & (b > a)


def integer_done(lower: torch.Tensor, upper: torch.Tensor, integer: torch.Tensor
                 ) -> torch.Tensor:
    """[N, d] bool: integer dimensions already fixed to one integer's values (nonnegative
    boxes): splitting them further cannot change the bound."""
    return integer.unsqueeze(0) & (lower >= 0) & (torch.floor(lower) == torch.floor(upper))


def split_points(lower: torch.Tensor, upper: torch.Tensor, split_int: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(left upper end, right lower end) [N] of each row's split dimension: the midpoint, or
    for ``split_int`` rows the integer m halving the integers held ([l, prev(m)], [m, u])."""
    mid = (lower + upper) / 2
    a, b = torch.floor(lower), torch.floor(upper)
    m = torch.floor((a + b + 1) / 2)  # a < m <= b
    # a lower end between prev(m) and m (not a float32 value) leaves no float32 value left
    left = torch.where(split_int, torch.maximum(below(m), lower), mid)
    right = torch.where(split_int, m, mid)
    return left, right


# Widest a non-integer dimension may be, relative to max(1, |value|), for integer cells: a
# fixed value widened to its float32 neighbours (2 ulps, 2**-23 relative) passes.
FIXED_WIDTH = 1e-6


def integer_cell_count(lower: torch.Tensor, upper: torch.Tensor, integer: torch.Tensor
                       ) -> int | None:
    """How many cells ``integer_cells`` cuts the box [d] into (None: the box is not free
    only in nonnegative integer dimensions), without building them."""
    if not integer.numel():
        return None
    free = upper > lower
    wide = (upper - lower) > FIXED_WIDTH * torch.clamp(lower.abs(), min=1.0)
    free = free & integer
    if bool((wide & ~integer).any()) or bool((lower[free] < 0).any()) or not bool(free.any()):
        return None
    dims = free.nonzero().ravel()
    return math.prod(int(n) for n in (torch.floor(upper[dims]) - torch.floor(lower[dims]) + 1)
                     .tolist())


def integer_cells(lower: torch.Tensor, upper: torch.Tensor, integer: torch.Tensor,
                  max_cells: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The box [d] cut into cells [K, d], one per combination of the integers its integer
    dimensions hold (each cell [m, prev(m + 1)], cut to the box), when every other dimension
    is fixed (up to the float32 neighbours ``InputRegion.bound_box`` widens a value to: width
    at most ``FIXED_WIDTH`` relative), the integer ones nonnegative, and K <= ``max_cells``;
    None otherwise. The network reads (almost) one input in a cell, so a cell's bound is as
    tight as the bound at a point (exact up to rounding for IBP where the rest is fixed)."""
    count = integer_cell_count(lower, upper, integer)
    if count is None or count > max_cells:
        return None
    dims = ((upper > lower) & integer).nonzero().ravel()
    a, b = torch.floor(lower[dims]), torch.floor(upper[dims])
    grids = torch.meshgrid(*[torch.arange(int(x), int(y) + 1, dtype=lower.dtype,
                                          device=lower.device)
                             for x, y in zip(a.tolist(), b.tolist(), strict=True)],
                           indexing="ij")
    m = torch.stack([g.reshape(-1) for g in grids], dim=1)  # [K, n]
    cell_lo = lower.repeat(len(m), 1)
    cell_hi = upper.repeat(len(m), 1)
    cell_lo[:, dims] = torch.maximum(m, lower[dims])
    cell_hi[:, dims] = torch.minimum(torch.maximum(below(m + 1), cell_lo[:, dims]), upper[dims])
    return cell_lo, cell_hi
