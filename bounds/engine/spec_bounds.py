"""Bounds of a specification matrix: lower bounds of ``C y - rhs`` for every spec row.

This is the engines' public entry point: ``bound_spec(graph, box, coef, rhs, options)``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from bounds.engine.alpha import optimize_alpha
from bounds.engine.analysis import largest_numel, window_and_product_nodes
from bounds.engine.box_dot import ends_terms
from bounds.engine.crown import MAX_COEF_ELEMENTS, backward_bound
from bounds.engine.deadline import DeadlineExceeded, note_bound_pass
from bounds.engine.ibp import ibp_bounds, intersect
from bounds.engine.intermediate import backward_rows_fit, chunk_rows, compute_intermediate
from bounds.engine.results import Intermediates, PassCache
from bounds.engine.rounding import final_margin
from bounds.engine.work_dtype import WORK_DTYPE
from bounds.graph import Graph
from bounds.rules.rewrites import bound_graph
from bounds.rules.softmax import simplex_lower
from bounds.rules.tangents import DomainError
from bounds.types import Interval

log = logging.getLogger(__name__)

Method = Literal["ibp", "crown", "alpha"]


@dataclass(frozen=True)
class BoundOptions:
    method: Method = "crown"
    alpha_iterations: int = 20
    alpha_lr: float = 0.1
    intermediate: Literal["auto", "ibp", "forward", "crown"] = "auto"
    # alpha-CROWN iterations spent on each intermediate value (0: plain CROWN there).
    intermediate_alpha_iterations: int = 0
    # alpha-CROWN's iterations in float32 on float64 bounds (``work_dtype``): they only pick
    # the alphas; the bounds reported come from one float64 pass with them.
    work_float32: bool = True
    # The last intermediate value refined may take LAST_REFINE_SHARE of the time left, chunk
    # by chunk (``compute_intermediate``'s ``last_share``): for a pass that only the final
    # bound follows (the cascade's CROWN step), not for search steps, whose timing is sized
    # on the rest of their work.
    last_refine: bool = False

    def __post_init__(self) -> None:
        # a misspelt method would otherwise give IBP's bounds silently ("alpha-crown" did)
        if self.method not in get_args(Method):
            raise ValueError(f"unknown bound method {self.method!r}: one of "
                             f"{', '.join(get_args(Method))}")
        if self.intermediate not in ("auto", "ibp", "forward", "crown"):
            raise ValueError(f"unknown intermediate method {self.intermediate!r}")

    @property
    def work_dtype(self) -> torch.dtype | None:
        return WORK_DTYPE if self.work_float32 else None

    def intermediate_method(self, input_size: int) -> str:
        if self.method == "ibp":
            return "ibp"
        if self.intermediate != "auto":
            return self.intermediate
        # Forward mode is much cheaper for tiny inputs but measured far looser on ACAS Xu
        # (30x more branch-and-bound domains), so backward CROWN is the default everywhere.
        return "crown"


@dataclass(frozen=True)
class SpecBounds:
    lower: torch.Tensor  # [B, S]: lower bound of (C y - rhs); > 0 refutes the row
    intermediates: Intermediates
    alphas: dict
    # [B, S, *input_shape] the input coefficients of the (first) CROWN pass, and [B, S] the
    # lower bound of (C y - rhs) it reached (min over the box of that linear function):
    # input-split branch-and-bound clips domains with them. None when no such pass ran.
    input_coef: torch.Tensor | None = None
    linear_lower: torch.Tensor | None = None

    @property
    def intermediate(self) -> dict[str, Interval]:
        """Interval bounds of every value (``intermediates.bounds``)."""
        return self.intermediates.bounds

    @property
    def deltas(self) -> dict[str, torch.Tensor | None]:
        """Rounding allowance of every value (``intermediates.deltas``)."""
        return self.intermediates.deltas


def ibp_lower(out: Interval, coef: torch.Tensor) -> torch.Tensor:
    """Lower bound of coef [B, S, n_out] . y over the output interval ``out``: [B, S]
    (``ends_terms``: an output unbounded on the side its coefficient does not read adds
    nothing, where 0 * inf made the row NaN: cctsdb's IoU head, [-inf, inf] when its divisor
    may be 0)."""
    lo, hi = out.lower.flatten(1).unsqueeze(1), out.upper.flatten(1).unsqueeze(1)
    return ends_terms(coef.flatten(2), lo, hi).sum(-1)


def structured_relaxations(graph: Graph) -> dict[str, Callable | None]:
    """Values whose CROWN step relaxes several inputs at once (window max, products of two
    perturbed values) and the outputs of expanded Softmax nodes: where concretising with the
    interval can beat relaxing on wide domains. Softmax outputs map to their concretisation
    on the simplex (``simplex_lower``), the others to None (the interval)."""
    names: dict[str, Callable | None] = dict.fromkeys(window_and_product_nodes(graph))
    for node in graph.nodes:
        if node.op == "Softmax":
            names[node.name] = functools.partial(simplex_lower, axis=int(node.attrs["axis"]))
    return names


def _with_softmax_ibp(graph: Graph, bounded: Graph, box: Interval, given: dict | None
                      ) -> dict | None:
    """``given`` plus the Softmax rule's own (exact-range) IBP interval of every Softmax output
    that the rewritten graph ``bounded`` still holds (expanded, same name), which the expanded
    form's IBP only matches up to its pieces' rounding allowances. The IBP pass ends at the
    last such Softmax; where an interval leaves an op's domain on the way (IBP looser than the
    CROWN pass that follows), the intervals are not added: they only refine."""
    kept = {n.name for n in bounded.nodes}
    names = [n.name for n in graph.nodes if n.op == "Softmax" and n.name in kept]
    if not names:  # (none, or every one dropped by the ArgMax rewrite: no IBP pass)
        return given
    try:
        ibp = ibp_bounds(graph, box, given, until=names[-1])
    except DomainError as exc:
        log.debug("no Softmax intervals from IBP: %s", exc)
        return given
    out = dict(given or {})
    for name in names:
        out[name] = intersect(ibp[name], out.get(name))
    return out


def _alpha_fits(inter: Intermediates, coef: torch.Tensor) -> bool:
    """alpha-CROWN keeps slopes and coefficients for every spec row at once ([B, S, *shape]
    per relaxed value): not when one domain's rows alone exceed the coefficient budget
    (thousands of disjuncts on a wide net; batches of domains are sized by their callers)."""
    return coef.shape[1] * largest_numel(inter.graph) <= MAX_COEF_ELEMENTS


def _crown_lower(inter: Intermediates, cache: PassCache, out_name: str, coef: torch.Tensor,
                 original: Graph):
    """CROWN through every relaxation, and (per spec row, the better of the two) CROWN that
    stops at the structured relaxations and uses their intervals, as CROWN did before they
    had relaxations: never looser than that on the final bound. Spec rows go through in
    chunks (``chunk_rows``: memory, and time per node between deadline checks: specs with
    thousands of disjuncts on wide nets). Before each chunk, the rows left are priced at
    the rate the intermediate passes measured: where they cannot end before the engines'
    deadline the pass stops at once (DeadlineExceeded) instead of running into it, so the
    time goes to what comes next (VGG16, 999 disjuncts: a pass of about 20 minutes held 80%
    of a 3-minute run before its deadline stopped it).
    Returns (lower, the first pass's bound, that pass's input coefficients or None)."""
    rows = max(1, chunk_rows(inter.graph, cache, largest_numel(inter.graph))
               // max(1, coef.shape[0]))
    stops = structured_relaxations(original)
    passes = 2 if stops else 1
    lowers, linears, input_coefs = [], [], []
    for first in range(0, coef.shape[1], rows):
        left = passes * coef.shape[0] * (coef.shape[1] - first)
        if not backward_rows_fit(inter.graph, cache, left, out_name):
            raise DeadlineExceeded(f"the CROWN pass of {left} spec rows cannot end in time")
        part = coef[:, first:first + rows]
        res = backward_bound(inter, out_name, part, keep_input=True, cache=cache)
        input_coefs.append(res.input_coef)
        lower = linear = res.lower
        if stops:
            lower = torch.maximum(lower, backward_bound(inter, out_name, part, cache=cache,
                                                        concretize_at=stops).lower)
        lowers.append(lower)
        linears.append(linear)
    input_coef = (None if any(a is None for a in input_coefs)
                  else torch.cat(input_coefs, dim=1))
    return torch.cat(lowers, dim=1), torch.cat(linears, dim=1), input_coef


def bound_spec(graph: Graph, box: Interval, coef: torch.Tensor, rhs: torch.Tensor,
               options: BoundOptions = BoundOptions(), given: dict | None = None,
               warm_alphas: dict | None = None, stop=None,
               record_linear: bool = False) -> SpecBounds:
    """Sound lower bounds of ``coef @ y - rhs`` for y = graph(x), x in ``box``.

    ``box`` tensors are ``[B, *input_shape]``; ``coef`` is ``[B, S, n_out]`` and ``rhs``
    ``[B, S]`` (a leading 1 broadcasts). Rows padded with rhs = +inf get -inf.
    With ``record_linear`` the intermediate values' CROWN linear bounds in the input are kept
    in ``intermediates.linear_bounds`` (meant for low-dimensional inputs: [B, numel, d] per
    value).
    """
    if len(graph.outputs) != 1 or len(graph.inputs) != 1:
        raise ValueError("bound engines support one graph input and one output")
    b = box.lower.shape[0]
    coef = coef.expand(b, *coef.shape[1:]).to(box.lower)
    rhs = rhs.expand(b, rhs.shape[-1]).to(box.lower)
    # ArgMax through score differences, Softmax through exp / sum / reciprocal (names kept).
    expanded = bound_graph(graph)
    cache = PassCache()
    with torch.no_grad():
        if expanded is not graph:
            given = _with_softmax_ibp(graph, expanded, box, given)
        inter = compute_intermediate(
            expanded, box, given, options.intermediate_method(box.lower[0].numel()),
            alpha_iterations=(options.intermediate_alpha_iterations
                              if options.method == "alpha" else 0),
            work_dtype=options.work_dtype, last_share=options.last_refine,
            record_linear=record_linear, cache=cache)
    out_name = graph.outputs[0].name
    out_shape = graph.outputs[0].shape
    full_coef = coef.reshape(b, coef.shape[1], *out_shape)
    lower = ibp_lower(inter.bounds[out_name], coef)
    alphas: dict = {}
    linear = input_coef = None
    if options.method in ("crown", "alpha"):
        # (alpha's starting point is not always CROWN's default relaxation: keep both.)
        with torch.no_grad():
            crown, linear, input_coef = _crown_lower(inter, cache, out_name, full_coef, graph)
            lower = torch.maximum(lower, crown)
    if options.method == "alpha" and not _alpha_fits(inter, full_coef):
        log.info("alpha-CROWN skipped: %d spec rows exceed the memory budget",
                 full_coef.shape[1])
    elif options.method == "alpha":

        def stop_when(best):
            return stop(final_margin(best - rhs)) if stop is not None else False

        # (the CROWN bound above is the loop's starting best: no second default pass)
        best, alphas = optimize_alpha(inter, out_name, full_coef, options.alpha_iterations,
                                      options.alpha_lr, warm_alphas, stop_when, cache,
                                      known=lower, work_dtype=options.work_dtype)
        lower = torch.maximum(lower, best)
    lower = final_margin(lower - rhs)
    linear_lower = None if linear is None else final_margin(linear - rhs)
    note_bound_pass()  # sound bounds of every spec row: the run's first_bound_s clock
    return SpecBounds(lower.detach(), inter, alphas, input_coef, linear_lower)
