"""Bound refinement by LP/MILP for small dense networks, and the size rule for using MILP.

``refine_bounds(graph, lower, upper, bounds, deltas, deadline)`` tightens the pre-activation
bounds of the first piecewise-linear layers (Relu, LeakyRelu, Abs): layer by layer, the network
up to that layer's input is encoded (verify.py's encoding: float32 rounding included, big-M
constants from the bounds refined so far) and each unstable neuron's value is minimised and
maximised. LP mode (default) drops integrality, which gives the best single-neuron (triangle)
relaxation bound given the earlier layers' bounds; its bounds are weak-duality values (see
``backends.HighsBounder``), sound whatever the solver's tolerances. MILP mode keeps the
binaries and uses the solver's dual bound, stopping each neuron at a time limit (still a bound).
New bounds are intersected with the old ones, so refinement never loosens anything.

Not used by ``auto`` (measured, session 12, ERAN ReLU 9x200 idx 225 at the cascade's
alpha-CROWN intermediate bounds, worst margin -20.91): LP mode on the first 3 refinable layers
took 60 CPU s and moved the margin to -20.24 (alpha-CROWN with intermediate alphas is already
close to the triangle relaxation); MILP mode on one layer moved it to -9.76 but took about 90
CPU s (15 CPU s of it: -18.61). Neither pays within a 60 s instance; the hook that fed the
neuron-split root was removed.

``milp_suits(graph, spec, unstable=..., deadline=...)``: the model-based rule for ``auto``: the
MILP encoding applies (supported ops), the net has at most MILP_MAX_KINK_NEURONS Relu-like
neurons (a size prefilter that needs no bound pass), and the number of binaries it would need
(unstable neurons after CROWN, max candidates) is at most ``MILP_MAX_BINARIES``; ``auto_milp``
is that step of ``auto``. The counts come from the CROWN pass the caller's cascade already ran
(``unstable``); a region without one gets its own CROWN pass, stopped after MILP_DECIDE_SHARE
of the time left (then MILP is not used): choosing a method never costs a full pass on a big
net (a CIFAR-size CNN behind a 16-input layer spent over 300 s in that pass). The threshold is
conservative: on mnistfc 256x2 (2 layers) MILP beat BaB at 95 unstable neurons, on ACAS Xu (6
layers) it timed out at 102-110 where input-split BaB took 2-10 s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from bounds.engine.deadline import DeadlineExceeded, engine_deadline
from bounds.engine.spec_bounds import BoundOptions, SpecBounds, bound_spec
from bounds.graph import Graph
from bounds.registry import rules
from bounds.rules.arithmetic import node_is_affine
from bounds.types import Interval
from verifier.milp import choices
from verifier.milp.backends import HighsBounder
from verifier.milp.encode import MilpUnsupportedError, encode, is_exact, unsupported_ops

log = logging.getLogger(__name__)

MILP_MAX_BINARIES = 64
# Size prefilter of ``milp_suits`` (Relu-like neurons in the whole net; ACAS Xu 300, mnistfc
# 256x6 1536, ERAN 9x200 1800): larger nets are never decided by MILP, without a bound pass.
MILP_MAX_KINK_NEURONS = 4096
# Binaries ``auto`` gives MILP on a net with one layer of Relu-like neurons (one_kink_layer).
MILP_MAX_BINARIES_ONE_LAYER = 20000
# Binaries ``auto`` gives MILP on a net whose only binaries are choices (ArgMax, TreeLeaves:
# a tree ensemble, which no other method decides): measured below, session 42.
MILP_MAX_CHOICE_BINARIES = 5000
# Share of the time left that ``milp_suits`` may spend on CROWN passes of its own.
MILP_DECIDE_SHARE = 0.05


@dataclass(frozen=True)
class RefineOptions:
    mode: Literal["lp", "milp"] = "lp"
    max_layers: int = 2  # refine the first layers that have unstable neurons
    max_unstable: int = 2000  # applicability: unstable neurons (after CROWN) in the whole net
    neuron_time_s: float = 1.0  # per solve (MILP mode mostly)


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).double().cpu().numpy()


def _zero_kink(node) -> bool:
    """A Relu-like node: its rule's exact MILP encoding has every kink at 0."""
    milp = rules().get(node.op, node.name).milp
    return milp.kind == "kinks" and milp.zero_kink


def _other_piecewise(node) -> bool:
    """A window max or a piecewise-linear op with kinks away from 0 (Clip)."""
    return _window_max(node) or _off_zero(node)


def _window_max(node) -> bool:
    return rules().get(node.op, node.name).milp.kind == "window_max"


def _off_zero(node) -> bool:
    milp = rules().get(node.op, node.name).milp
    return milp.kind == "kinks" and not milp.zero_kink


def kink_inputs(graph: Graph, skip_affine: bool = False) -> list[str]:
    """Input values of the Relu-like nodes (kink at 0), in graph order, without repeats.
    ``skip_affine``: leave out values affine in the network input (their interval bounds over
    a box are exact already: nothing to refine)."""
    out: list[str] = []
    nonlinear: set[str] = set()
    for node in graph.nodes:
        src = node.dynamic_inputs[0] if node.dynamic_inputs else None
        after_kink = any(v in nonlinear for v in node.dynamic_inputs)
        if _zero_kink(node) and src not in out and (after_kink or not skip_affine):
            out.append(src)
        if after_kink or not node_is_affine(node, rules().get(node.op, node.name)):
            nonlinear.add(node.name)
    return out


def count_unstable(graph: Graph, bounds: dict) -> int:
    """The MILP's binaries under ``bounds``: unstable Relu-like neurons (l < 0 < u), the
    kinks of the other piecewise-linear ops (Clip) inside their inputs' bounds, and the
    candidates of the choosing ops (ArgMax, TreeLeaves: ``choices``)."""
    total = 0
    for name in kink_inputs(graph):
        lo, hi = _flat(bounds[name].lower), _flat(bounds[name].upper)
        total += int(((lo < 0) & (hi > 0)).sum())
    return total + _off_zero_kinks(graph, bounds) + _choice_binaries(graph, bounds)


def _off_zero_kink_neurons(graph: Graph) -> int:
    """Elements of the inputs of "kinks" ops with kinks away from 0 (Clip): no bound pass."""
    return sum(math.prod(graph.shape_of(n.dynamic_inputs[0])) for n in graph.nodes
               if n.dynamic_inputs and _off_zero(n))


def _off_zero_kinks(graph: Graph, bounds: dict) -> int:
    """One binary per kink t of a "kinks" op whose kinks are not all at 0 (Clip's two ends),
    per element whose input bounds hold t strictly inside (``activations.kinks``)."""
    total = 0
    for node in graph.nodes:
        if not node.dynamic_inputs or not _off_zero(node):
            continue
        milp = rules().get(node.op, node.name).milp
        src = node.dynamic_inputs[0]
        if src not in bounds:
            return MILP_MAX_CHOICE_BINARIES + 1  # (no bounds: not a MILP to choose)
        lo, hi = _flat(bounds[src].lower), _flat(bounds[src].upper)
        total += sum(int(((lo < at) & (hi > at)).sum()) for _, at in milp.kinks(node.attrs).terms)
    return total


def _choice_binaries(graph: Graph, bounds: dict) -> int:
    total = 0
    for node in graph.nodes:
        kind = rules().get(node.op, node.name).milp.kind
        if kind not in ("argmax", "leaves") or not node.dynamic_inputs:
            continue
        src = node.dynamic_inputs[0]
        if src not in bounds:
            return MILP_MAX_CHOICE_BINARIES + 1  # (no bounds: not a MILP to choose)
        lo, hi = _flat(bounds[src].lower), _flat(bounds[src].upper)
        total += (choices.argmax_binaries(node, lo, hi, graph.shape_of(src)) if kind == "argmax"
                  else choices.leaf_binaries(node, lo, hi))
    return total


def _refine_layer(graph, lower, upper, current, deltas, name, deadline, opts) -> Interval | None:
    iv = current[name]
    lo, hi = _flat(iv.lower), _flat(iv.upper)
    unstable = np.flatnonzero((lo < 0) & (hi > 0))
    if unstable.size == 0:
        return None
    enc = encode(graph, lower, upper, current, deltas, float_errors=True, upto=name)
    out = enc.output
    bounder = HighsBounder(enc.model, integer=opts.mode == "milp")
    new_lo, new_hi = lo.copy(), hi.copy()
    first = True  # the cold start takes far longer than the warm-started solves after it
    # widest first: those gain most when the time share runs out part way
    for j in unstable[np.argsort(-(hi - lo)[unstable])]:
        for sign in (1.0, -1.0):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            limit = left if first else min(left, opts.neuron_time_s)
            v = bounder.minimum(out.idx, sign * out.mat[j].toarray().ravel(), limit)
            first = False
            if sign > 0:
                new_lo[j] = max(new_lo[j], v + out.const[j])
            else:
                new_hi[j] = min(new_hi[j], -v + out.const[j])
    shape = iv.lower.shape
    return Interval(torch.as_tensor(new_lo, dtype=iv.lower.dtype).reshape(shape),
                    torch.as_tensor(new_hi, dtype=iv.upper.dtype).reshape(shape))


def refine_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray, bounds: dict,
                  deltas: dict, deadline: float, options: RefineOptions | None = None
                  ) -> dict[str, Interval]:
    """Tightened Intervals (batch 1) of Relu-like input values, keyed by value name; only the
    values it refined. ``bounds``/``deltas``: CROWN's intermediate bounds and rounding
    allowances for the box [lower, upper] (flattened). Stops at ``deadline``."""
    opts = options or RefineOptions()
    if unsupported_ops(graph) or count_unstable(graph, bounds) > opts.max_unstable:
        return {}
    current, out, layers = dict(bounds), {}, 0
    for name in kink_inputs(graph, skip_affine=True):
        if layers >= opts.max_layers or time.monotonic() >= deadline:
            break
        try:
            iv = _refine_layer(graph, lower, upper, current, deltas, name, deadline, opts)
        except MilpUnsupportedError as exc:  # an encoding too large to build
            log.info("bound refinement stops: %s", exc)
            break
        if iv is None:
            continue
        layers += 1
        current[name] = out[name] = iv
    return out


def crown_bounds(graph: Graph, lower: np.ndarray, upper: np.ndarray) -> SpecBounds:
    """CROWN's intermediate bounds (``.intermediate``, ``.deltas``) of ``graph`` on the box
    [lower, upper] (flattened input)."""
    shape = graph.inputs[0].shape
    n_out = math.prod(graph.outputs[0].shape)
    box = Interval(torch.as_tensor(lower, dtype=torch.float64).reshape(1, *shape),
                   torch.as_tensor(upper, dtype=torch.float64).reshape(1, *shape))
    zero = torch.zeros(1, 1, n_out, dtype=torch.float64)
    return bound_spec(graph, box, zero, torch.zeros(1, 1, dtype=torch.float64),
                      BoundOptions(method="crown"))


def kink_neurons(graph: Graph) -> int:
    """Relu-like neurons in the net (elements of their input values): no bound pass needed."""
    return sum(math.prod(graph.shape_of(name)) for name in kink_inputs(graph))


def one_kink_layer(graph: Graph) -> bool:
    """Whether the net is exact piecewise-linear with every Relu-like neuron's input affine in
    the network input (one hidden layer, e.g. conv, Relu, pooling, dense). Its MILP's big-M
    constants are then exact interval bounds of affine functions and its LP relaxation is each
    neuron's convex hull: HiGHS proved verivital Convnet_avgpool prop_7_0.04 (5299 binaries)
    at its root node in 9 s, where ReLU BaB stalled at -0.34 after 6500 domains in 115 s."""
    return (kink_neurons(graph) > 0 and is_exact(graph)
            and not any(_other_piecewise(n) for n in graph.nodes)
            and not kink_inputs(graph, skip_affine=True))


def milp_suits(graph: Graph, spec, max_binaries: int = MILP_MAX_BINARIES, *,
               unstable: Mapping[int, int] | None = None, deadline: float | None = None,
               one_layer: bool = True) -> bool:
    """Whether ``auto`` should decide ``spec`` by MILP: every op encodable, at most
    MILP_MAX_KINK_NEURONS Relu-like neurons, and in every input region at most
    ``max_binaries`` binaries after CROWN (unstable Relu-like neurons, Clip kinks inside
    their bounds, choices; MaxPool nets are left to the other methods). A net with no
    Relu-like neuron whose encoding only relaxes some op (Sigmoid, Tanh ...) is left to
    GenBaB: its MILP is an LP over the same planes the bound cascade already optimised, whose
    points are only candidates.
    ``unstable[i]``: region i's count from a CROWN pass already run; other regions get a pass
    within MILP_DECIDE_SHARE of the time to ``deadline`` (no answer in time: MILP is not
    used). ``one_layer``: a net with ``one_kink_layer`` is decided by MILP with up to
    MILP_MAX_BINARIES_ONE_LAYER binaries, whatever its size (the encoding's own caps and
    pace still apply)."""
    if unsupported_ops(graph) or any(_window_max(n) for n in graph.nodes):
        return False
    kinks = kink_neurons(graph) + _off_zero_kink_neurons(graph)
    if one_layer and one_kink_layer(graph):
        max_binaries = max(max_binaries, MILP_MAX_BINARIES_ONE_LAYER)
    elif kinks > MILP_MAX_KINK_NEURONS or (kinks == 0 and not is_exact(graph)):
        return False
    elif kinks == 0:  # exact, its binaries all choices
        max_binaries = max(max_binaries, MILP_MAX_CHOICE_BINARIES)
    stop = None if deadline is None else \
        time.monotonic() + MILP_DECIDE_SHARE * max(deadline - time.monotonic(), 0.0)
    for index, region in enumerate(spec.regions):
        count = (unstable or {}).get(index)
        if count is None:
            count = _unstable_after_crown(graph, region, stop)
        if count is None or count > max_binaries:
            return False
    return True


def _unstable_after_crown(graph: Graph, region, stop: float | None) -> int | None:
    """Unstable Relu-like neurons of ``region`` after CROWN; None when the pass does not end
    by ``stop``."""
    try:
        with nullcontext() if stop is None else engine_deadline(stop):
            res = crown_bounds(graph, *region.bound_box())
    except DeadlineExceeded:
        log.info("MILP not chosen: the CROWN pass to count unstable neurons did not fit")
        return None
    return count_unstable(graph, res.intermediate)


AUTO_MILP_SHARE = 0.5


def auto_milp(model, spec, deadline: float, backend: str = "auto",
              unstable: Mapping[int, int] | None = None, one_layer: bool = True):
    """``auto``'s MILP step: when ``milp_suits`` the model, ``milp_verify`` within
    AUTO_MILP_SHARE of the time left; (verdict, counterexample, stats) for a ``sat`` or
    ``unsat`` answer, else None (the caller goes on with its bounds / branch-and-bound).
    ``unstable``: per region, unstable neurons after the caller's CROWN pass."""
    from verifier.milp.verify import milp_verify

    if not milp_suits(model.graph, spec, unstable=unstable, deadline=deadline,
                      one_layer=one_layer):
        return None
    start = time.monotonic()
    stop = start + AUTO_MILP_SHARE * max(deadline - start, 0.0)
    verdict, cex, stats = milp_verify(model, spec, stop, backend=backend)
    log.info("MILP step of auto: %s in %.1f s of %.1f s%s", verdict, time.monotonic() - start,
             stop - start, f" ({stats['reason']})" if stats.get("reason") else "")
    return (verdict, cex, stats) if verdict in ("sat", "unsat") else None
