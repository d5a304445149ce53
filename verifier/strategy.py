"""Which methods run, in which order, for a loaded model and spec (``--method``).

auto: a short attack; CROWN then alpha-CROWN on every input region; for regions left open,
input-split branch-and-bound when the input is small (<= INPUT_SPLIT_MAX_INPUTS values),
neuron-split branch-and-bound otherwise: beta-CROWN ReLU splits, and with general
nonlinearities (Sigmoid, Tanh, Sin, GELU, ...) GenBaB splits of their input intervals in the
same search (``config.bab``); a last attack when that gives up. One ``Falsifier`` serves every
attack of the run, each going on where the previous one stopped. When the cascade's bounds lie
far below zero next to how close the first attack came (``verifier.attack.share``), the
attack gets a share of the time before branch-and-bound and as much after it (the search then
stops early for a last attack).
"""

from __future__ import annotations

import dataclasses
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
from verifier.bab.region_batch import refute_in_batches
from verifier.result import VerificationResult

log = logging.getLogger(__name__)

INPUT_SPLIT_MAX_INPUTS = 16
FIRST_ATTACK_MAX_S = 0.5
GENBAB_ATTACK_MAX_S = 3.0
DTYPE = torch.float64


def _attack(attacks, deadline: float, budget_s: float):
    """One attack of the run: its ``Falsifier`` goes on where the previous attack stopped. It
    stops where the bound engines do (``engine_end``): its pieces (a guided CROWN pass, a batch
    of points, a PGD step) check the clock between them, and one that started just before the
    deadline ended up to 0.4 s past it (oval21 cifar_deep_kw, the run's last attack)."""
    return attacks.run(engine_end(deadline), budget_s=budget_s)


# Incomplete verification tries these in order, stopping at the first that refutes the region.
INCOMPLETE_CASCADE = (
    # (only its final bound follows the intermediate bounds: the last value refined may take
    # most of the step's time)
    BoundOptions(method="crown", intermediate="crown", last_refine=True),
    BoundOptions(method="alpha", intermediate="crown"),
    # alpha-CROWN on every intermediate value too: much tighter on deep smooth networks
    # (ERAN 6x200 sigmoid: worst row -20 -> +6.7), at several times the cost.
    BoundOptions(method="alpha", intermediate="crown", intermediate_alpha_iterations=5),
)


DEEP_COST_FACTOR = 8.0
# A cascade step may use at most this share of the time left. When the first (CROWN) step
# does not fit, no complete method would either: the rest goes to a last attack, and the
# answer is ``unknown`` naming why, rather than ``timeout`` at the deadline.
CASCADE_STEP_SHARE = 0.8


class BoundsDidNotFit(Exception):  # noqa: N818 - reads as the event it reports
    """The first bound step of a region could not end within its share of the time."""


def region_refuted(graph, problem: RegionProblem, deadline: float,
                   costs: dict[int, float] | None = None,
                   unstable: dict[int, int] | None = None,
                   margins: dict[int, float] | None = None,
                   bounds: dict[int, dict] | None = None,
                   cascade: tuple[BoundOptions, ...] = INCOMPLETE_CASCADE,
                   give_up: bool = True) -> bool:
    """Incomplete verification of one region by the bound cascade (``cascade``: a prefix of
    INCOMPLETE_CASCADE, :func:`cascade_steps`).

    A step is skipped when the time left is under DEEP_COST_FACTOR times what the previous
    step took. A step stopped at its time share (``_cascade_step``) ends the cascade for this
    region (the first step raises BoundsDidNotFit); the run's own deadline ends the run.
    ``costs`` receives the largest time each cascade step took (step index -> seconds);
    ``unstable`` receives the region's unstable Relu-like neurons after the first (CROWN) step,
    which ``auto``'s MILP choice reads instead of a bound pass of its own; ``margins`` the
    region's best worst-open-disjunct margin over the steps (< 0 while not refuted);
    ``bounds`` the steps' intermediate bounds intersected (:func:`tightest`; the
    neuron-split search's root bounds). A step whose intermediate values are bounded as the
    previous step's were (plain CROWN) starts from that step's bounds instead of computing them
    again; each step's alpha-CROWN loop ends once the region is refuted or, with ``give_up``
    (``BabConfig.cascade_give_up``), once its pace says it will not be
    (``verifier.bab.cascade_stop``).
    """
    last_cost, res = 0.0, None
    for i, options in enumerate(cascade):
        if deadline - time.monotonic() < DEEP_COST_FACTOR * last_cost:
            return False
        start = time.monotonic()
        res = _cascade_step(graph, problem, options, deadline, given=res, give_up=give_up)
        if res is None:
            if i == 0:
                raise BoundsDidNotFit(f"a {options.method} bound of region {problem.index} "
                                      f"did not fit in {CASCADE_STEP_SHARE:.0%} of the time")
            return False
        last_cost = time.monotonic() - start
        if costs is not None:
            costs[i] = max(costs.get(i, 0.0), last_cost)
        if bounds is not None:
            bounds[problem.index] = tightest(bounds.get(problem.index), res.intermediate)
        if unstable is not None and i == 0:
            from verifier.milp.refine import count_unstable

            unstable[problem.index] = count_unstable(graph, res.intermediate)
        refuted = problem.refuted_disjuncts(res.lower)
        if bool(refuted.all()):
            log.info("region %d refuted by %s", problem.index, options)
            return True
        if margins is not None:
            margin = float(problem.margin(res.lower, refuted).min())
            margins[problem.index] = max(margins.get(problem.index, -math.inf), margin)
    if (len(cascade) < len(INCOMPLETE_CASCADE) and bounds is not None
            and deadline - time.monotonic() >= DEEP_COST_FACTOR * last_cost):
        bounds.pop(problem.index, None)  # the search's root runs the step left out itself
    return False


def cascade_steps(graph, config) -> tuple[BoundOptions, ...]:
    """The cascade's steps for a run: INCOMPLETE_CASCADE, less its last step (alpha-CROWN on
    every intermediate value, 5 iterations) where a ReLU search follows on a conv net
    (``short_cascade``). The search's root then runs that alpha-CROWN itself with its own
    20 iterations (``region_refuted`` hands it no bounds, where the step would have run):
    on resnet_2b prop_10 (cascade then search, worst margin at equal CPU s from the start,
    two pairs of runs side by side under load 3-4, full cascade vs short) -0.1596 vs -0.1175
    at 40 s in both, -0.1156 / -0.1014 vs -0.1061 at 50 s, and at the end (50-52 s) -0.0848 /
    -0.0838 vs -0.0756 / -0.0620; a third short run proved it at 71 CPU s. The step refuted
    none of the 16 sampled oval21 and cifar10_resnet instances. Without the root's 20
    iterations (the step only left out) the search led early and lost by 45 s."""
    if config.method not in ("auto", "bab") or not config.bab.short_cascade:
        return INCOMPLETE_CASCADE
    from verifier.bab.neuron_options import has_conv_split_layer

    layers = _relu_split_layers(graph, config)
    if layers and has_conv_split_layer(layers):
        return INCOMPLETE_CASCADE[:-1]
    return INCOMPLETE_CASCADE


def _relu_split_layers(graph, config) -> list:
    """The search's split layers when every one is a Relu-like sign split (else [])."""
    from verifier.bab.nonlinear import split_layers

    bab = config.bab
    layers = split_layers(graph, bab.nonlinear, bab.nonlinear and bab.products)
    relu_only = bool(layers) and all(lay.sign_split and not lay.products for lay in layers)
    return layers if relu_only else []


def cascade_give_up(graph, config) -> bool:
    """Whether the cascade's alpha loops may stop when their pace says they will not refute
    the region (``verifier.bab.cascade_stop``): on Relu-only nets, with
    ``BabConfig.cascade_give_up`` on (``--no-bab-cascade-give-up``). Not on smooth nets: on
    ERAN sigmoid 6x200 idx 7481 the intermediate-alpha step's worst margin went -1.466,
    -1.466, -1.396, then refuted at the fourth pass; giving up at the third sent it to
    GenBaB (7.7 CPU s instead of 1.9). ERAN relu 9x200 idx 6453 (cascade + root + search,
    CPU s, two runs each): 2.55 / 2.57 off, 2.23 / 2.36 on (the alpha step 0.33 -> 0.07)."""
    if not config.bab.cascade_give_up:
        return False
    return bool(_relu_split_layers(graph, config))


def tightest(old: dict[str, Interval] | None,
             new: dict[str, Interval]) -> dict[str, Interval]:
    """Each value's bounds from two cascade steps intersected (both hold on the region). A
    later step is not always tighter everywhere: one cut short by its time leaves values to
    intervals (resnet_4b prop_13 at a 120 s cap: the intermediate-alpha step's final margin
    -49430 against CROWN's -4.85), and the search's root starts from these bounds."""
    if old is None:
        return new
    return {k: Interval(torch.maximum(v.lower, old[k].lower), torch.minimum(v.upper, old[k].upper))
            if k in old and old[k].lower.shape == v.lower.shape else v for k, v in new.items()}


def _cascade_step(graph, problem: RegionProblem, options: BoundOptions, deadline: float,
                  given=None, give_up: bool = True):
    """bound_spec of the region within CASCADE_STEP_SHARE of the time left; None when it did
    not end by then (the run's own deadline passing still raises). ``given``: the previous
    step's SpecBounds; its intermediate bounds hold on the region, so they are intersected in,
    and a step that would compute them the same way (plain CROWN: no intermediate alpha)
    takes them as they are (IBP through them, no CROWN pass again: the same bounds). The
    alpha loop stops at ``cascade_stop.RefuteOrGiveUp``."""
    from bounds.engine.deadline import DeadlineExceeded, engine_deadline
    from verifier.bab.cascade_stop import RefuteOrGiveUp

    shape = graph.inputs[0].shape
    box = Interval(problem.lower.reshape(1, *shape), problem.upper.reshape(1, *shape))
    known = None if given is None else given.intermediate
    if known is not None and options.intermediate_alpha_iterations == 0 \
            and options.intermediate_method(box.lower[0].numel()) == "crown":
        options = dataclasses.replace(options, intermediate="ibp")
    stop = RefuteOrGiveUp(problem, options.alpha_iterations, give_up)
    now = time.monotonic()
    try:
        with engine_deadline(min(deadline, now + CASCADE_STEP_SHARE * (deadline - now))):
            return bound_spec(graph, box, problem.coef.unsqueeze(0), problem.rhs.unsqueeze(0),
                              options, given=known, stop=stop)
    except DeadlineExceeded:
        if time.monotonic() >= deadline:
            raise
        log.info("region %d: %s bound stopped at its time share", problem.index, options.method)
        return None


def _validator(model, spec, region: int):
    from verifier.validate import validate_batch

    def validate(x: torch.Tensor):
        xs = x.detach().cpu().double().numpy()[:32]
        return validate_batch(model, spec, xs, regions=np.full(len(xs), region))

    return validate


# The bound engines stop this long before the run's deadline: a chunk of work in flight when
# their clock runs out (sized to NODE_TIME_GRANULE_S at a rate measured earlier, three times
# longer when the machine got busier since) and the unwinding after it must end before the
# run's deadline. Measured at a 120 s cap under load: carvana and TinyYOLO runs ended
# 0.4-1.0 s past it.
ENGINE_MARGIN_SHARE = 0.02
ENGINE_MARGIN_MAX_S = 1.5


def engine_end(deadline: float) -> float:
    """When the bound engines must stop for a run that ends at ``deadline``."""
    left = max(0.0, deadline - time.monotonic())
    return deadline - min(ENGINE_MARGIN_MAX_S, ENGINE_MARGIN_SHARE * left)


def run_methods(model, spec, config, device, deadline, progress=None) -> VerificationResult:
    """The methods ``config.method`` names, in order, until one settles the property; the
    bound engines stop at ``deadline`` too (a bound computation in flight then ends the run
    with ``timeout``)."""
    from bounds.engine.deadline import DeadlineExceeded, engine_deadline

    try:
        with engine_deadline(engine_end(deadline)):
            return _run_methods(model, spec, config, device, deadline, progress)
    except DeadlineExceeded:
        log.info("bound computation stopped at the deadline")
        return VerificationResult("timeout", method=config.method,
                                  message="deadline reached during a bound computation")


def _run_methods(model, spec, config, device, deadline, progress=None) -> VerificationResult:
    from verifier.attack.falsify import Falsifier

    method = config.method
    remaining = deadline - time.monotonic()
    attack_budget = remaining if method == "attack" else min(
        FIRST_ATTACK_MAX_S, config.attack.time_share * remaining)
    attacks = Falsifier(model, spec, config.attack, device=device, seed=config.seed)
    cex = _attack(attacks, deadline, attack_budget)
    if cex is not None:
        return VerificationResult("sat", cex, method="attack")
    if time.monotonic() >= deadline:
        return VerificationResult("timeout", method="attack")
    if method == "attack":
        return VerificationResult("unknown", method="attack",
                                  message="no counterexample found")
    if method == "milp":
        from verifier.milp import milp_verify

        verdict, cex, stats = milp_verify(model, spec, deadline, backend=config.milp_backend)
        return VerificationResult(verdict, cex, method="milp", stats=stats,
                                  message=stats.get("reason", ""))
    graph = model.graph
    too_big = _bounds_do_not_fit(graph, device)
    if too_big is not None:
        result = _last_attack(attacks, deadline, method, too_big)
        if result.verdict == "sat":
            return result
        return VerificationResult("unknown", method=method, message=too_big,
                                  stats={"out_of_memory": too_big})
    problems = [RegionProblem.from_region(i, r, device, DTYPE)
                for i, r in enumerate(spec.regions)]
    small_input = _low_dimensional(graph, problems)
    open_problems, costs, unstable, margins, root_bounds = [], {}, {}, {}, {}
    # many input boxes: one batched pass settles most of them (verifier.bab.region_batch)
    batch_refuted = refute_in_batches(graph, problems, deadline, unstable)
    cascade, give_up = cascade_steps(graph, config), cascade_give_up(graph, config)
    for p in problems:
        if p.index in batch_refuted:
            continue
        if time.monotonic() >= deadline:
            return VerificationResult("timeout", method="incomplete")
        # Small inputs go straight to input splitting, whose first step is the same bound.
        try:
            if (method == "incomplete" or not small_input) and region_refuted(
                    graph, p, deadline, costs, unstable, margins, root_bounds, cascade,
                    give_up):
                continue
        except BoundsDidNotFit as exc:
            return _last_attack(attacks, deadline, method, str(exc))
        open_problems.append(p)
    if not open_problems:
        return VerificationResult("unsat", method="incomplete")
    if method == "auto":  # small models: MILP decides (verifier.milp.refine.milp_suits)
        from verifier.milp.refine import auto_milp

        decided = auto_milp(model, spec, deadline, config.milp_backend, unstable,
                            config.bab.milp_one_layer)
        if decided is not None:
            return VerificationResult(decided[0], decided[1], method="milp", stats=decided[2])
    if method in ("auto", "bab") and not small_input:
        margin = min((margins[p.index] for p in open_problems if p.index in margins),
                     default=None)
        return _neuron_split(model, spec, config, open_problems, deadline, progress, device,
                             costs, attacks, margin, root_bounds)
    if method == "incomplete" or not small_input:
        return _last_attack(attacks, deadline, method)
    return _input_split(model, spec, config, open_problems, deadline, progress, attacks)


def _low_dimensional(graph, problems) -> bool:
    """Input splitting suits: at most INPUT_SPLIT_MAX_INPUTS inputs, or every region free only
    in integer inputs with at most ``InputSplitOptions.integer_cells`` combinations (a patch
    position over a fixed image, cctsdb_yolo_2023: 63 x 63 cells, where a bound pass of the
    whole box took 67-75 s and GenBaB lost two sat instances the cells' sweep finds)."""
    if math.prod(graph.inputs[0].shape) <= INPUT_SPLIT_MAX_INPUTS:
        return True
    from verifier.bab.integer_split import integer_cell_count, integer_dims

    integer = integer_dims(graph)
    if not integer.numel() or not problems:
        return False
    limit = InputSplitOptions().integer_cells
    counts = [integer_cell_count(p.lower, p.upper, integer.to(p.lower.device))
              for p in problems]
    return all(n is not None and n <= limit for n in counts)


def _bounds_do_not_fit(graph, device) -> str | None:
    """Why no bound pass of this model fits the memory free (None: it fits). The spec's
    rows do not count: the passes take them in chunks, one row at the least."""
    from verifier.memory_guard import bounds_fit

    reason = bounds_fit(graph, device, DTYPE)
    if reason is not None:
        log.warning("bound stages skipped: %s", reason)
        return f"not bounded: {reason}"
    return None


# A last attack runs only when more than this is left (seconds).
LAST_ATTACK_MIN_S = 1.0


def _last_attack(attacks, deadline, method,
                 reason: str = "bounds did not settle the property") -> VerificationResult:
    """Nothing complete applies: spend what is left looking for a counterexample."""
    remaining = deadline - time.monotonic()
    if method != "incomplete" and remaining > LAST_ATTACK_MIN_S:
        cex = _attack(attacks, deadline, remaining)
        if cex is not None:
            return VerificationResult("sat", cex, method="attack")
    if time.monotonic() >= deadline:
        return VerificationResult("timeout", method=method)
    return VerificationResult("unknown", method=method, message=reason)


def _input_split(model, spec, config, problems, deadline, progress_cb,
                 attacks) -> VerificationResult:
    from verifier.bab.region_attack import box_attack

    stats: dict = {}
    for p in problems:
        progress = Progress(progress_cb, label=f"input-split region {p.index}")
        attack = box_attack(model.graph, spec.regions[p.index], config.attack.steps,
                            max(1, config.attack.restarts // 5), config.seed)
        search = InputSplitSearch(model.graph, p, deadline, InputSplitOptions(), progress,
                                  _validator(model, spec, p.index), attack)
        outcome = search.run()
        stats[f"region_{p.index}"] = outcome.stats
        if outcome.verdict == "sat":
            return VerificationResult("sat", outcome.counterexample, method="bab-input",
                                      stats=stats)
        if outcome.verdict == "unsat":
            continue
        # as after a neuron-split search: seconds left that no step fits (cctsdb patch-1
        # idx_01613 stopped at 93 s of 120 after a 70 s step) go to a last attack
        if outcome.verdict == "timeout" and deadline - time.monotonic() <= LAST_ATTACK_MIN_S:
            return VerificationResult("timeout", method="bab-input", stats=stats)
        reason = ("the search stopped with time left, no step fitting in it"
                  if outcome.verdict == "timeout" else "bounds did not settle the property")
        result = _last_attack(attacks, deadline, "bab-input", reason)
        return VerificationResult(result.verdict, result.counterexample, method=result.method,
                                  message=result.message, stats=stats)
    return VerificationResult("unsat", method="bab-input", stats=stats)


def neuron_split_options(config, **overrides):
    """The neuron-split search's options: ``config.bab``'s settings (the options extend
    ``BabConfig``), the run's seed, and ``overrides``."""
    from dataclasses import asdict

    from verifier.bab.neuron_split import NeuronSplitOptions

    return NeuronSplitOptions(**asdict(config.bab), seed=config.seed, **overrides)


def _root_alpha_iterations(costs: dict[int, float], remaining: float) -> int:
    """alpha-CROWN iterations per intermediate value at a GenBaB root, from what the
    cascade's intermediate-alpha step (5 iterations) cost: 20 iterations on a deep smooth net
    can outlast the time left, and the engines' deadline would then stop the root bound and
    end the run before any split."""
    step = len(INCOMPLETE_CASCADE) - 1
    if step not in costs:
        return 0
    cost = costs[step]
    return 20 if remaining > 12 * cost else 5 if remaining > 4 * cost else 0


def _neuron_split(model, spec, config, problems, deadline, progress_cb, device, costs,
                  attacks, margin: float | None = None, root_bounds: dict | None = None):
    """Neuron-split branch-and-bound (ReLU and, with general nonlinearities, GenBaB) per open
    region; unknown regions end in a last attack. With ``adaptive_attack``, a hopeless-looking
    search (``attack_share`` of the attack's best loss and the cascade's worst ``margin``)
    comes after an attack with that share of the time left and stops that share of its own
    time early for a last attack."""
    from verifier.attack.share import attack_share
    from verifier.bab.neuron_split import NeuronSplitSearch, region_attack
    from verifier.bab.nonlinear import has_nonlinear_splits

    options = neuron_split_options(config, root_crown_s=(costs or {}).get(0))
    name = "bab-genbab" if options.nonlinear and has_nonlinear_splits(model.graph) \
        else "bab-relu"
    if name == "bab-genbab" and costs is not None:
        options = neuron_split_options(config, root_crown_s=costs.get(0),
                                       root_alpha_iterations=_root_alpha_iterations(
                                           costs, deadline - time.monotonic()))
    share = attack_share(attacks.best_loss, margin) if config.bab.adaptive_attack else 0.0
    left = deadline - time.monotonic()
    # smooth networks: the first short attack often misses
    budget = min(GENBAB_ATTACK_MAX_S, 0.1 * left) if name == "bab-genbab" else 0.0
    budget = max(budget, share * left)
    if share > 0:
        log.info("bounds %.3g from a proof, attack %.3g from a counterexample: %.0f%% of the "
                 "time to attacks before and after the search", margin, attacks.best_loss,
                 100 * share)
    cex = _attack(attacks, deadline, budget) if budget > 0 else None
    if cex is not None:
        return VerificationResult("sat", cex, method="attack")
    search_end = deadline - share * max(0.0, deadline - time.monotonic())
    stats: dict = {}
    for p in problems:
        attack = region_attack(model.graph, spec.regions[p.index], config.attack.steps,
                               config.attack.restarts, device)
        search = NeuronSplitSearch(model.graph, p, search_end, options,
                                   Progress(progress_cb, label=f"{name} region {p.index}"),
                                   _validator(model, spec, p.index), attack,
                                   root_bounds=(root_bounds or {}).get(p.index))
        search.schedule.prior(attacks.best_loss, margin)
        outcome = _run_search(search, deadline)
        # its queue and bounds freed now, not when this frame unwinds: on a VGG16-size net
        # that took the 0.5 s between the last attack and the run's deadline
        search = attack = None
        stats[f"region_{p.index}"] = outcome.stats
        # a search that stops with seconds left (its next step would not fit: resnet_2b ended
        # at 52 s of 60) leaves them to a last attack
        spare = deadline - time.monotonic() > LAST_ATTACK_MIN_S
        if outcome.verdict == "sat" or (outcome.verdict == "timeout" and share == 0
                                        and not spare):
            return VerificationResult(outcome.verdict, outcome.counterexample,
                                      method=name, stats=stats)
        if outcome.verdict != "unsat":
            reason = ("the search stopped with time left, no step fitting in it"
                      if outcome.verdict == "timeout" else "bounds did not settle the property")
            result = _last_attack(attacks, deadline, name, reason)
            return VerificationResult(result.verdict, result.counterexample, method=result.method,
                                      message=result.message, stats=stats)
    return VerificationResult("unsat", method=name, stats=stats)


def _run_search(search, deadline: float):
    """``search.run()``; when the search ends well before the run's ``deadline``, the
    engines' DeadlineExceeded at the search's own deadline is a timeout of the search (a last
    attack follows), not of the run."""
    from bounds.engine.deadline import DeadlineExceeded
    from verifier.bab.input_split import BabOutcome

    try:
        return search.run()
    except DeadlineExceeded:
        if time.monotonic() >= deadline - ENGINE_MARGIN_MAX_S:
            raise
        return BabOutcome("timeout", stats={"stopped": "search deadline (a last attack next)"})
