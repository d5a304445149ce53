"""The neuron-split search's options and counters (``NeuronSplitSearch`` in ``neuron_split``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.bab.beta import BetaOptions
from verifier.bab.chain_guide import linear_chain
from verifier.config import BabConfig
from verifier.step_timer import StepTimer

# A step starts only when it fits before the search's end by ``verifier.step_timer``'s rule
# (input splitting and PGD follow it too): a step's pieces that cannot read the clock
# (autograd's backward, copies of the batch, the primal points' forward pass) must end in
# time, and steps slow down (another process on the machine, fewer children proved early in
# the pair loop).

# The smallest batch of a shrunk last step (``shrink_last_steps``; a step's time follows the
# children it bounds, ``step_timer.scale``).
LAST_STEP_MIN = 8
# Filtered strong branching on Relu-only nets (relubab, session 23, ``relu_bab_bench --cascade``
# 40 s, 3 vs 6 candidates side by side): oval21 base img6638 proved in 8.8 vs 13.5 s, resnet_2b
# prop_10 in 10.1 vs 13.1 s; worst margins at 38 CPU s better on oval21 wide img6391 (-0.269 vs
# -0.310), deep img7479 (-1.216 vs -1.248), base img590 (-0.379 vs -0.388), resnet_2b prop_0
# (-0.179 vs -0.190), mnistfc 256x4 prop_0_0.03 and ERAN 9x200 idx 225 at 29 s; resnet_4b
# prop_13 -0.752 vs -0.745. 5 and 8 were each worse than 6 on some of them, 10 on img590.
RELU_FSB_CANDIDATES = 6
GENERAL_FSB_CANDIDATES = 3
# Share of the memory free on the search's device (``budget.free_bytes``: the machine's, a
# bench worker's share or a service job's limit) its queue may take; bound passes size
# themselves to what is left (``budget.PASS_MEMORY_SHARE`` of it each).
QUEUE_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class NeuronSplitOptions(BabConfig):
    """The user's BaB settings (inherited from ``BabConfig``: ``nonlinear`` also splits general
    nonlinear neurons (GenBaB: Sigmoid, Tanh, Sin, GELU, ...) at ``points``, chosen by
    ``heuristic``; ``products`` also splits operands of products of two perturbed values;
    ``branching`` picks neurons by top score or filtered strong branching) and the search's own
    tuning below. Networks with only Relus keep BaBSR scores."""

    batch: int = 64
    max_domains: int = 500_000
    # seconds of the bound cascade's CROWN pass over the region, where one ran (prices the
    # root's alpha-CROWN without a pass of its own: ``SearchRoot._affordable_alpha``)
    root_crown_s: float | None = None
    # the queue's tensors; None: QUEUE_MEMORY_SHARE of the memory free on the search's device
    # when the root is bounded (a fixed 2 GiB ended oval21 searches at 7.7k queued domains,
    # 118 s into a 300 s run on a 24 GiB machine)
    memory_bytes: int | None = None
    # neurons filtered strong branching tries per domain; None: RELU_FSB_CANDIDATES on
    # Relu-only searches, GENERAL_FSB_CANDIDATES with general nonlinear splits
    fsb_candidates: int | None = None
    # (``intermediate``, the children's intermediate bounds, is a BabConfig field: "reuse" the
    # parent's (split applied), "downstream": CROWN again for the split layers after the newly
    # split one (upstream bounds cannot change: CROWN there does not see the split),
    # "recompute": CROWN for every layer, "auto")
    # alpha-CROWN iterations per intermediate value at the root (tighter bounds to start from).
    root_alpha_iterations: int = 20
    beta: BetaOptions = BetaOptions()
    root_iterations: int = 30
    stuck_iterations: int = 300  # domains with nothing left to split: optimise longer
    attack_every: int = 8  # steps between attacks on the region box
    # GenBaB steps (many children each) are slow: attack at least this often (seconds).
    attack_every_s: float = 4.0
    seed: int = 0
    multi_split: int = 5  # GenBaB: neurons split per domain and step while batches are small
    # Drop the Relus dead on the region from fully connected layers (``reduce``): exact.
    narrow_dead: bool = True
    # Relu-only nets: optimise alpha and beta and score branches in float32; bounds stay
    # float64 passes.
    work_float32: bool = True
    # Relu-only nets: optimise open (domain, spec row) pairs, each dropped once proved.
    pair_batches: bool = True
    # Relu-only nets too split further candidates while the children fill less than a batch;
    # None: on, except on fully connected Relu chains (``fc_relu_chain``), where one split per
    # domain and step bounded more tightly per domain and per CPU second (relu18g, session 19:
    # mnistfc 256x4 prop_0_0.03 at 100 domains -0.2586 vs -0.4175, at 8 CPU s -0.2586 vs
    # -0.2759, with ``intermediate`` "downstream" on them).
    relu_multi_split: bool | None = None
    # (``root_refine``, ``shrink_last_steps``, ``drop_hopeless``, ``lazy_certify`` and
    # ``chain_pass`` are BabConfig fields: ablation switches on verify and bench)


@dataclass
class _Counters:
    done: int = 0
    steps: int = 0
    stuck: int = 0
    max_depth: int = 0
    extra: dict = field(default_factory=dict)
    step_timer: StepTimer = field(default_factory=StepTimer)

    def step_estimate(self, work: float | None = None) -> float:
        """Seconds the next step may take, bounding ``work`` domains where given (before the
        first, from the root's bound: ``SearchRoot.root``)."""
        return self.step_timer.safety * self.step_timer.slowest(work)


def expected_kids(parents: int, extra: int, size: int) -> int:
    """Children a step makes from ``parents`` domains (``neuron_domains.split_more``'s rule:
    two each, doubled by up to ``extra`` further splits while they fill at most ``size``;
    an upper bound where a domain lacks candidates)."""
    kids, used = 2 * parents, 1
    while used <= extra and 2 * kids <= size:
        kids, used = 2 * kids, used + 1
    return kids


def fc_relu_chain(graph, sign_only: bool) -> bool:
    """Whether the search's net is a fully connected Linear/Relu chain (mnistfc, ERAN's Relu
    nets; ``chain_guide.linear_chain``) with Relu splits only: there ``intermediate`` "auto"
    means "downstream" and ``relu_multi_split`` None means off."""
    return sign_only and linear_chain(graph) is not None


def has_conv_split_layer(layers) -> bool:
    """Whether some split layer has two or more axes longer than 1 (a convolution's output):
    ``drop_hopeless`` and ``root_refine`` measured gains only on such nets."""
    return any(sum(d > 1 for d in lay.shape) > 1 for lay in layers)
