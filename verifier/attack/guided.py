"""Attack starting points that the bounds point to, instead of random ones.

A CROWN pass gives, for every spec row ``coef @ y - rhs``, a linear lower bound ``a @ x + c``
that holds on the whole box. Its minimum over the box is at the vertex ``x_i = lo_i`` where
``a_i >= 0`` and ``hi_i`` elsewhere; where the bound is tight the row is smallest near that
vertex, so a violation in a thin pocket near a box vertex -- which uniform or face starts hit
with probability about the pocket's volume -- is found by evaluating one point. A disjunct of
several rows (all must hold) gets the vertex of the sum of its rows as well. These are the
"vertices the linear bounds point to" of issue 18; branch-and-bound computes the same points
for its sub-domains (``verifier.bab.neuron_split``) and seeds its own attacks with them.

The bound pass runs under a deadline of its own (a share of the attack's time): on a network
whose CROWN pass does not fit, no point comes back and the attack goes on without them.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from bounds.engine.deadline import DeadlineExceeded, engine_deadline
from bounds.graph import Graph
from bounds.registry import UnsupportedOpError
from bounds.rules.tangents import DomainError
from bounds.types import Interval
from verifier.spec.types import OutputCondition

log = logging.getLogger(__name__)

# Boxes bounded in one guided pass (a group of many regions: the first ones only).
MAX_BOXES = 16


def vertex_of(coef: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The vertices minimising ``coef @ x`` over boxes: coef [M, n], lo/hi [M, n]."""
    return torch.where(coef >= 0, lo, hi)


def _row_coefs(cond: OutputCondition) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spec rows of ``cond`` as (coef [S, n_out] float64, rhs [S], disjunct index [S]); padding
    rows (rhs = +inf) are dropped."""
    d, k, n_out = cond.coef.shape
    coef = torch.as_tensor(cond.coef.reshape(d * k, n_out), dtype=torch.float64)
    rhs = torch.as_tensor(cond.rhs.reshape(d * k), dtype=torch.float64)
    disjunct = torch.arange(d).repeat_interleave(k)
    keep = torch.isfinite(rhs)
    return coef[keep], rhs[keep], disjunct[keep]


def input_coefs(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor,
                rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """CROWN's linear lower bounds of the rows in the input: (input coef [B, S, n], their
    minimum over each box [B, S]); None when the engine gives no input coefficients."""
    from bounds.engine.spec_bounds import BoundOptions, bound_spec

    shape = graph.inputs[0].shape
    b = lo.shape[0]
    box = Interval(lo.double().reshape(b, *shape), hi.double().reshape(b, *shape))
    res = bound_spec(graph, box, coef.unsqueeze(0), rhs.unsqueeze(0),
                     BoundOptions(method="crown", intermediate="crown"))
    if res.input_coef is None:
        return None
    return res.input_coef.flatten(2), res.lower


def bound_vertices(graph: Graph, lo: torch.Tensor, hi: torch.Tensor, cond: OutputCondition,
                   deadline: float, limit: int, box_rhs: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Vertices the CROWN bounds of ``cond``'s rows point to, for the float32 boxes lo/hi
    [R, n] (the first MAX_BOXES): (points [M, n] in lo's dtype, box index [M]), most
    promising (lowest linear bound) first, at most ``limit``; None when the bound pass did
    not fit before ``deadline`` or gave no linear bounds. ``box_rhs`` [R, D, K]: each box's
    own thresholds where its condition is ``cond`` but for them (they shift each box's
    linear bounds, not their coefficients)."""
    if (len(graph.inputs) != 1 or len(graph.outputs) != 1 or not graph.nodes
            or time.monotonic() >= deadline):
        return None  # (a graph without nodes, y = x: nothing for the bounds to point at)
    coef, rhs, disjunct = _row_coefs(cond)
    if len(coef) == 0:
        return None
    lo_b, hi_b = lo[:MAX_BOXES], hi[:MAX_BOXES]
    try:
        with engine_deadline(deadline), torch.no_grad():
            got = input_coefs(graph, lo_b, hi_b, coef.to(lo.device), rhs.to(lo.device))
    except DeadlineExceeded:
        log.info("guided attack: the CROWN pass did not fit in its time share")
        return None
    except (MemoryError, RuntimeError, DomainError, UnsupportedOpError) as exc:
        # an engine limit, an op without a bound rule or an interval outside an op's domain:
        # the bounds point nowhere here, so go on without the points
        log.info("guided attack: no bound pass (%s)", exc)
        return None
    if got is None:
        return None
    a, low = got  # [B, S, n], [B, S]
    if box_rhs is not None:  # coef @ y - rhs_b = (coef @ y - rhs) + rhs - rhs_b
        own = box_rhs[:len(low)].reshape(len(low), -1).to(low)
        low = low + rhs.to(low) - own[:, torch.isfinite(torch.as_tensor(cond.rhs)).flatten()]
    a, low = _with_disjunct_sums(a, low, disjunct.to(a.device))
    b, s, n = a.shape
    order = torch.argsort(torch.nan_to_num(low, nan=math.inf).flatten())[:limit]
    box = order // s
    flat = a.reshape(b * s, n)[order]
    return vertex_of(flat.to(lo.dtype), lo_b[box], hi_b[box]), box


def _with_disjunct_sums(a: torch.Tensor, low: torch.Tensor, disjunct: torch.Tensor):
    """Append, per disjunct of several rows, the sum of its rows' coefficients (its vertex
    makes all rows small at once); the sum's rank is its largest row's linear bound."""
    counts = torch.bincount(disjunct)
    multi = torch.nonzero(counts > 1).flatten()
    if len(multi) == 0:
        return a, low
    member = (disjunct.unsqueeze(0) == multi.unsqueeze(1)).to(a.dtype)  # [Dm, S]
    sums = torch.einsum("ds,bsn->bdn", member, a)
    worst = torch.where(member.bool().unsqueeze(0), low.unsqueeze(1),
                        torch.full_like(low.unsqueeze(1), -math.inf)).amax(-1)
    return torch.cat([a, sums], dim=1), torch.cat([low, worst], dim=1)
