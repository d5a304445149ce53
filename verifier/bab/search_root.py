"""The root of a neuron-split search: its intermediate bounds and the narrowed net.

A mixin of ``NeuronSplitSearch`` (it reads the search's ``problem``, ``options``, ``layers``,
``graph``, ``root_bounds``, ``reduction`` and ``counters``, and its ``_intermediates`` and
``bound``); with ``narrow_dead`` it replaces the search's ``graph``, ``layers`` and ``carry``
by the narrowed net's (``verifier.bab.reduce``).
"""

from __future__ import annotations

import logging
import math
import time

import torch

from bounds.types import Interval
from verifier.bab.neuron_domains import NeuronDomains
from verifier.bab.nonlinear import split_layers
from verifier.bab.reduce import dead_relu_reduction
from verifier.bab.warm_start import AlphaCarry

log = logging.getLogger(__name__)

# A Relu-only root given bounds (the bound cascade's) refines them with alpha-CROWN in at most
# this share of the search's time; one alpha iteration over every intermediate value costs
# about this many plain CROWN passes (2.5-2.6 measured on oval21 base and resnet_2b).
ROOT_ALPHA_SHARE = 0.08
ALPHA_ITERATION_COST = 3.0
ROOT_ALPHA_MIN = 8  # fewer add little to the cascade's own (5 iterations)


class SearchRoot:
    def root(self) -> NeuronDomains:
        """The root domain, bounded: intermediate bounds (``root_bounds`` where given, else
        alpha-CROWN), the net narrowed to the Relus alive on the region (``narrow_dead``),
        then alpha and beta optimised on the final bound."""
        p = self.problem
        dev, s = p.lower.device, p.coef.shape[0]
        empty = {lay.value: torch.zeros((1, *lay.shape), dtype=torch.int8, device=dev)
                 for lay in self.layers}
        inf = torch.full((1, s), -math.inf, device=dev, dtype=p.lower.dtype)
        dom = NeuronDomains(empty, {}, {}, {}, {}, inf, torch.full((1,), -math.inf, device=dev),
                          torch.zeros((1, p.n_disjuncts), dtype=torch.bool, device=dev),
                          torch.full((1, 1), -1, device=dev),
                          torch.zeros(1, dtype=torch.long, device=dev))
        self._root_intermediates(dom)
        if self.options.narrow_dead:  # (again: alpha-CROWN finds more dead Relus)
            self._narrow(dom)
        began = time.monotonic()
        dom = self.bound(dom, self.options.root_iterations, reuse=True)
        # the first step's estimate until it has its own: a step bounds at least one domain
        # as this did (unscaled: on small nets a batch of children costs little more than one)
        self.counters.step_timer.guess(time.monotonic() - began)
        return dom

    def _root_intermediates(self, dom: NeuronDomains) -> None:
        """The root's split-layer bounds into ``dom``: ``root_bounds`` refined by alpha-CROWN
        as far as time allows on Relu-only nets (:meth:`_affordable_alpha`), else
        alpha-CROWN intersected with them; with
        ``narrow_dead`` the alpha-CROWN pass runs on the net narrowed by plain CROWN bounds
        (a dead Relu changes no bound: the same bounds, a fraction of the work)."""
        given = self.root_bounds or {}
        dev, dt = self.problem.lower.device, self.problem.lower.dtype
        iterations = self.options.root_alpha_iterations
        if all(lay.value in given for lay in self.layers):
            red = self.reduction  # (a second root of a narrowed search: narrow them too)
            self._set_layer_bounds(dom, {lay.value: Interval(*(
                (t if red is None else red.take(lay.value, t, 1)).to(dev, dt)
                for t in (given[lay.value].lower, given[lay.value].upper)))
                for lay in self.layers})
            if self.sign_only:
                iterations = self._affordable_alpha(dom, iterations)
            if iterations <= 0:
                return
        elif self.options.narrow_dead and iterations > 0:
            self._set_layer_bounds(dom, self._intermediates(dom, False)[0].bounds)
            self._narrow(dom)
        self._set_layer_bounds(dom, self._intermediates(dom, False, iterations)[0].bounds)

    def _affordable_alpha(self, dom: NeuronDomains, iterations: int) -> int:
        """alpha-CROWN iterations on a Relu-only root that was given bounds: as many of
        ``iterations`` as fit in ROOT_ALPHA_SHARE of the time left (0 with ``root_refine``
        off), priced from one plain CROWN pass over the narrowed net (whose bounds,
        intersected with the given ones, ``dom`` keeps). The cascade's bounds come from few
        alpha iterations; 20 more on oval21 base img6638 cost 2 s and took a 40 s search from
        a worst margin of -0.015 to -0.004, while on resnet_2b they cost 11 s and the search
        did worse (-0.070 -> -0.088 at 40 s): the time decides. Fully connected nets too:
        the cascade's 5 iterations can leave them far from alpha's bounds (mnistfc 256x4
        prop_6_0.05: root -34.7 after 5 iterations, -13.3 after 20, whose 0.5 s more took a
        30 s search from a worst margin of -26.2 to -9.7; ERAN 9x200 idx 225: -14.5 -> -9.7;
        mnistfc 256x4 prop_0: -0.227 -> -0.126, with 40% more domains a second, as fewer
        Relus stay unstable). (Session 16 kept them out: ERAN 9x200 idx 6453 paid 1.5 s of a
        7.4 s verify, mnistfc 256x2 prop_13 gained nothing.)"""
        if not self.options.root_refine or iterations <= 0:
            return 0
        known, budget = self.options.root_crown_s, ROOT_ALPHA_SHARE * (
            self.deadline - time.monotonic())
        if known is not None and budget < ROOT_ALPHA_MIN * ALPHA_ITERATION_COST * known:
            # (the pass that prices them cost 13.8 s of a 60 s run on a CIFAR-100-size ResNet,
            # to find that none fit)
            log.info("root alpha-CROWN: 0 iterations fit %.2f s (the cascade's CROWN pass "
                     "%.3f s)", budget, known)
            return 0
        if self.options.narrow_dead:
            self._narrow(dom)
        began = time.monotonic()
        self._set_layer_bounds(dom, self._intermediates(dom, False)[0].bounds)
        crown_s = time.monotonic() - began
        budget = ROOT_ALPHA_SHARE * (self.deadline - time.monotonic())
        fit = min(iterations, int(budget / max(1e-6, ALPHA_ITERATION_COST * crown_s)))
        log.info("root alpha-CROWN: %d iterations fit %.2f s (a CROWN pass %.3f s)",
                 fit if fit >= ROOT_ALPHA_MIN else 0, budget, crown_s)
        return fit if fit >= ROOT_ALPHA_MIN else 0

    def _set_layer_bounds(self, dom: NeuronDomains, bounds) -> None:
        dom.lower = {lay.value: bounds[lay.value].lower for lay in self.layers}
        dom.upper = {lay.value: bounds[lay.value].upper for lay in self.layers}

    def _narrow(self, dom: NeuronDomains) -> None:
        """Search a narrower net without the Relus dead on the region (``reduce``); ``dom``
        (the root, split-layer bounds set) is restricted to it in place."""
        bounds = {v: Interval(dom.lower[v], dom.upper[v]) for v in dom.lower}
        red = dead_relu_reduction(self.graph, bounds)
        if red is None:
            return
        opts, width = self.options, {lay.value: lay.numel for lay in self.layers}
        self.graph = red.graph
        self.reduction = red if self.reduction is None else self.reduction.then(red)
        self.layers = split_layers(red.graph, opts.nonlinear, opts.nonlinear and opts.products)
        self.carry = AlphaCarry(self.layers)
        for name in ("splits", "lower", "upper"):
            setattr(dom, name, {k: red.take(k, t, 1) for k, t in getattr(dom, name).items()})
        dropped = sum(width[k] - len(v) for k, v in red.keep.items())
        self.counters.extra["dead_dropped"] = self.counters.extra.get("dead_dropped", 0) + dropped
