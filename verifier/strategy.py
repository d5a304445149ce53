"""Which methods run, in which order, for a loaded model and spec (``--method``).

auto: a short attack; CROWN then alpha-CROWN on every input region; for regions left open,
input-split branch-and-bound when the input is small (<= INPUT_SPLIT_MAX_INPUTS values);
a longer attack with the time left otherwise (ReLU-split BaB is not part of this version).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from verifier.bab.input_split import InputSplitOptions, InputSplitSearch
from verifier.bab.problem import RegionProblem
from verifier.bab.progress import Progress
from verifier.result import VerificationResult

log = logging.getLogger(__name__)

INPUT_SPLIT_MAX_INPUTS = 16
FIRST_ATTACK_MAX_S = 0.5
DTYPE = torch.float64


def _attack(model, spec, config, device, deadline, budget_s):
    from verifier.attack import falsify

    return falsify(model, spec, deadline, config.attack, device=device, seed=config.seed,
                   budget_s=budget_s)


def region_refuted(graph, problem: RegionProblem, method: str, deadline: float) -> bool:
    """Incomplete verification of one region: CROWN, then alpha-CROWN if needed."""
    shape = graph.inputs[0].shape
    box = Interval(problem.lower.reshape(1, *shape), problem.upper.reshape(1, *shape))
    methods = ["crown", "alpha"] if method != "ibp" else ["ibp"]
    for m in methods:
        if time.monotonic() >= deadline:
            return False
        res = bound_spec(graph, box, problem.coef.unsqueeze(0), problem.rhs.unsqueeze(0),
                         BoundOptions(method=m, intermediate="crown"))
        if bool(problem.refuted_disjuncts(res.lower).all()):
            log.info("region %d refuted by %s", problem.index, m)
            return True
    return False


def _validator(model, spec, region: int):
    from verifier.validate import validate_batch

    def validate(x: torch.Tensor):
        xs = x.detach().cpu().double().numpy()[:32]
        return validate_batch(model, spec, xs, regions=np.full(len(xs), region))

    return validate


def run_methods(model, spec, config, device, deadline, progress=None) -> VerificationResult:
    method = config.method
    remaining = deadline - time.monotonic()
    attack_budget = remaining if method == "attack" else min(
        FIRST_ATTACK_MAX_S, config.attack.time_share * remaining)
    cex = _attack(model, spec, config, device, deadline, attack_budget)
    if cex is not None:
        return VerificationResult("sat", cex, method="attack")
    if time.monotonic() >= deadline:
        return VerificationResult("timeout", method="attack")
    if method == "attack":
        return VerificationResult("unknown", method="attack",
                                  message="no counterexample found")
    graph = model.graph
    problems = [RegionProblem.from_region(i, r, device, DTYPE)
                for i, r in enumerate(spec.regions)]
    small_input = math.prod(graph.inputs[0].shape) <= INPUT_SPLIT_MAX_INPUTS
    open_problems = []
    for p in problems:
        if time.monotonic() >= deadline:
            return VerificationResult("timeout", method="incomplete")
        # Small inputs go straight to input splitting, whose first step is the same bound.
        if (method == "incomplete" or not small_input) and region_refuted(
                graph, p, "alpha", deadline):
            continue
        open_problems.append(p)
    if not open_problems:
        return VerificationResult("unsat", method="incomplete")
    if method == "incomplete" or not small_input:
        return _last_attack(model, spec, config, device, deadline, method)
    return _input_split(model, spec, open_problems, deadline, progress)


def _last_attack(model, spec, config, device, deadline, method) -> VerificationResult:
    """Nothing complete applies: spend what is left looking for a counterexample."""
    remaining = deadline - time.monotonic()
    if method != "incomplete" and remaining > 1:
        cex = _attack(model, spec, config, device, deadline, remaining)
        if cex is not None:
            return VerificationResult("sat", cex, method="attack")
    if time.monotonic() >= deadline:
        return VerificationResult("timeout", method=method)
    return VerificationResult("unknown", method=method,
                              message="bounds did not settle the property")


def _input_split(model, spec, problems, deadline, progress_cb) -> VerificationResult:
    stats: dict = {}
    for p in problems:
        progress = Progress(progress_cb, label=f"input-split region {p.index}")
        search = InputSplitSearch(model.graph, p, deadline, InputSplitOptions(), progress,
                                  _validator(model, spec, p.index))
        outcome = search.run()
        stats[f"region_{p.index}"] = outcome.stats
        if outcome.verdict == "sat":
            return VerificationResult("sat", outcome.counterexample, method="bab-input",
                                      stats=stats)
        if outcome.verdict != "unsat":
            return VerificationResult(outcome.verdict, method="bab-input", stats=stats)
    return VerificationResult("unsat", method="bab-input", stats=stats)
