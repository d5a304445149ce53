"""Bound many input regions in batched passes.

Specs with thousands of input boxes (nn4sys-style ``or`` of boxes) made the region loop run the
bound cascade, or an input-split search, once per box: thousands of small passes that did not
end by the deadline although each box is easy. One CROWN pass over a batch of boxes (the
engines are batched over domains) refutes most of them at once; only the boxes it leaves open
go on to the per-region methods. Batches group regions with the same row layout (bound_spec
takes one coefficient matrix per batch element, of one shape) and hold at most
MAX_COEF_ELEMENTS coefficients in the final pass; the clock is checked between batches.
"""

from __future__ import annotations

import logging
import time

import torch

from bounds.engine.analysis import largest_numel
from bounds.engine.crown import MAX_COEF_ELEMENTS
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.graph import Graph
from bounds.types import Interval
from verifier.bab.problem import RegionProblem

log = logging.getLogger(__name__)

# Fewer regions than this are left to the per-region cascade (a batch would save nothing).
MIN_REGIONS = 8
MAX_BATCH = 1024


def _groups(problems: list[RegionProblem]) -> list[list[RegionProblem]]:
    """Problems with the same (disjuncts, rows, outputs) layout, in first-seen order."""
    groups: dict[tuple, list[RegionProblem]] = {}
    for p in problems:
        groups.setdefault((p.n_disjuncts, p.n_rows, p.coef.shape[1]), []).append(p)
    return list(groups.values())


def _batch_size(graph: Graph, rows: int) -> int:
    return max(1, min(MAX_BATCH, MAX_COEF_ELEMENTS // max(1, rows * largest_numel(graph))))


def _unstable_counts(graph: Graph, bounds: dict[str, Interval], n: int) -> list[int]:
    """Per batch element, its unstable Relu-like neurons (what MILP would need binaries for)."""
    from verifier.milp.refine import kink_inputs

    total = torch.zeros(n, dtype=torch.long)
    for name in kink_inputs(graph):
        iv = bounds[name]
        total += ((iv.lower < 0) & (iv.upper > 0)).reshape(n, -1).sum(1).cpu()
    return total.tolist()


def _refuted(graph: Graph, batch: list[RegionProblem], unstable: dict[int, int] | None
             ) -> torch.Tensor:
    """[len(batch)] bool: every disjunct of the region has a row CROWN proves positive.
    ``unstable`` receives each region's unstable neuron count."""
    shape = graph.inputs[0].shape
    box = Interval(torch.stack([p.lower for p in batch]).reshape(len(batch), *shape),
                   torch.stack([p.upper for p in batch]).reshape(len(batch), *shape))
    coef = torch.stack([p.coef for p in batch])
    rhs = torch.stack([p.rhs for p in batch])
    res = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown", intermediate="crown"))
    if unstable is not None:
        counts = _unstable_counts(graph, res.intermediate, len(batch))
        unstable.update((p.index, c) for p, c in zip(batch, counts, strict=True))
    return batch[0].refuted_disjuncts(res.lower).all(-1)


def refute_in_batches(graph: Graph, problems: list[RegionProblem], deadline: float,
                      unstable: dict[int, int] | None = None) -> set[int]:
    """Indices of the problems that batched CROWN passes refute (empty for fewer than
    MIN_REGIONS problems); ``unstable`` receives, per bounded region, its unstable Relu-like
    neurons after that pass. Stops starting batches at ``deadline``; the bound engines' own
    deadline (when set) ends a pass in flight."""
    if len(problems) < MIN_REGIONS:
        return set()
    refuted: set[int] = set()
    start = time.monotonic()
    for group in _groups(problems):
        size = _batch_size(graph, group[0].coef.shape[0])
        for first in range(0, len(group), size):
            if time.monotonic() >= deadline:
                return refuted
            batch = group[first:first + size]
            done = _refuted(graph, batch, unstable)
            refuted.update(p.index for p, ok in zip(batch, done.tolist(), strict=True) if ok)
    log.info("batched CROWN refuted %d of %d regions in %.2f s", len(refuted), len(problems),
             time.monotonic() - start)
    return refuted
