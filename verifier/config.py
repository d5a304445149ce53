"""One explicit configuration object for a verification run; presets are named constructors.

Each user-facing choice is defined here once: the method and device names (``Method``,
``METHODS``; ``Device``, ``DEVICES``), which the CLI commands, the bench, the gate and the
service schema import, and the branch-and-bound settings (``BabConfig``), whose fields carry
the CLI flag and help text that ``verifier.cli.common.add_bab_arguments`` builds its options
from and which the neuron-split search's options extend (``verifier.bab.neuron_split``).
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

Method = Literal["auto", "attack", "incomplete", "bab", "milp"]
METHODS: tuple[str, ...] = get_args(Method)
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
PointMode = Literal["optimized", "midpoint"]  # where a nonlinear neuron's interval is split
Heuristic = Literal["bbps", "width"]  # which nonlinear neuron is split
Branching = Literal["fsb", "babsr"]  # filtered strong branching, or the top score only
IntermediateMode = Literal["auto", "reuse", "downstream", "recompute"]  # children's bounds (BaB)


class AttackConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    restarts: int = Field(10, ge=0)
    steps: int = Field(50, ge=0)
    random_samples: int = Field(256, ge=0)
    time_share: float = Field(0.1, gt=0, le=1)
    # Start from the box vertices CROWN's linear bounds of the spec rows point to
    # (verifier.attack.guided); off: random and face starts only (the ablation baseline).
    guided: bool = True


def _setting(default, flag: str, help: str):  # noqa: A002 - argparse's name for it
    """A BaB setting's default with its CLI flag and help text (``dataclasses.field`` metadata).
    A bool that defaults to True gets a ``--no-...`` switch that turns it off."""
    return field(default=default, metadata={"flag": flag, "help": help})


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class BabConfig:
    """Branch-and-bound over neurons (GenBaB for general nonlinearities, beta-CROWN for Relus).

    A (validating) dataclass rather than a model so that the search's own options can extend
    it: ``NeuronSplitOptions`` inherits these fields instead of listing them again.
    """

    nonlinear: bool = _setting(
        True, "--no-nonlinear-bab",
        "split only Relu neurons (no GenBaB splits of Sigmoid/Tanh/...)")
    products: bool = _setting(  # only with ``nonlinear``
        True, "--no-product-bab",
        "do not split operands of products of two perturbed values (Mul, MatMul)")
    points: PointMode = _setting(
        "optimized", "--bab-points",
        "branching points of nonlinear neurons: lookup tables or midpoints")
    heuristic: Heuristic = _setting(
        "bbps", "--bab-heuristic",
        "nonlinear neuron choice: bound-improvement estimate or width baseline")
    branching: Branching = _setting(
        "fsb", "--bab-branching", "filtered strong branching or top score only")
    step_iterations: int = _setting(
        20, "--bab-iterations",
        "alpha-beta iterations per ReLU BaB step (children start from their parent's alphas "
        "and betas)")
    guided_attack: bool = _setting(  # read by VerifyConfig: it sets ``attack.guided``
        True, "--no-guided-attack",
        "the first and last attacks start only from random points, not also from the box "
        "vertices CROWN's linear bounds point to")
    seeded_attack: bool = _setting(
        True, "--no-seeded-attack",
        "attacks during BaB start only from random points, not from the vertices the worst "
        "domains' linear bounds point to")
    adaptive_attack: bool = _setting(
        True, "--no-adaptive-attack",
        "attack every few BaB steps for a fixed time instead of a share that follows how "
        "close the attack comes")
    nogoods: bool = _setting(  # off: on mnistfc/eran/oval21 they cost learning time and
        False, "--nogoods",     # rarely match another domain (session 12)
        "ReLU BaB: learn nogoods from verified domains to prune domains and force phases")
    cuts: bool = _setting(
        False, "--cuts",
        "ReLU BaB: learn nogoods (as --nogoods, also in short cut trees from the root) and "
        "use them as cutting planes in the bounds (multipliers optimised with alpha and beta)")
    # The three below: relubab, session 14 (benchmarks/relu_bab_bench.py, worst margin at equal
    # CPU seconds). Root iterations: oval21 base img6638 reached -0.030 with 0, -0.0151 with 5
    # (the cascade's), -0.0039 with 20; on resnet_2b 20 cost 11 s more for a worse bound, so
    # the refinement is priced from one CROWN pass and takes 8% of the time at most.
    root_refine: bool = _setting(
        True, "--no-bab-root-refine",
        "ReLU BaB: keep the cascade's intermediate bounds at the root instead of refining them "
        "with more alpha-CROWN iterations where that fits in 8 percent of the time")
    # The search stopped 2-5 s early on oval21 base when a full step no longer fitted.
    shrink_last_steps: bool = _setting(
        True, "--no-bab-shrink-last-steps",
        "ReLU BaB: stop when a full step no longer fits before the deadline, instead of "
        "running a smaller last batch")
    # Conv nets only (on fully connected ones it lost: mnistfc 256x4 prop_0 -0.344 vs -0.255
    # at 10 CPU s); on: oval21 base img6638 -0.0225 vs -0.0437, resnet_2b prop_10 -0.160 vs
    # -0.216 at 15 CPU s.
    drop_hopeless: bool = _setting(
        True, "--no-bab-drop-hopeless",
        "ReLU BaB on conv nets: keep optimising (domain, row) pairs that cannot be proved "
        "within the step's iterations at their recent rate of gain, instead of splitting them")
    # bab18, session 15 (``verifier.strategy.cascade_steps``): resnet_2b prop_10 worst margin
    # at 40 / about 50 CPU s from the start -0.1596 / -0.0838 with the full cascade, -0.1175 /
    # -0.0620 when the root's own 20-iteration alpha-CROWN replaces the cascade's step.
    short_cascade: bool = _setting(
        True, "--no-bab-short-cascade",
        "ReLU BaB on conv nets: run the bound cascade's alpha-CROWN on every intermediate "
        "value (5 iterations) before the search, instead of the search's root running it "
        "with 20 iterations")
    # relu18d, session 16 (``verifier.strategy.cascade_give_up``): ERAN relu 9x200 idx 6453
    # cascade + root + search 3.24 -> 2.12 CPU s (steps 0.21/0.52/1.91 -> 0.22/0.06/1.24).
    cascade_give_up: bool = _setting(
        True, "--no-bab-cascade-give-up",
        "ReLU nets: the bound cascade's alpha-CROWN loops run all their iterations, instead "
        "of stopping once their recent pace cannot refute the region in the iterations left")
    # relu18e, session 17 (``verifier.bab.pair_loop.optimize_pairs``' ``lazy``): resnet_2b
    # prop_20 103.1 vs 88.7 domains/CPU s, oval21 base img590 114.2 vs 99.2 (on vs off).
    lazy_certify: bool = _setting(
        True, "--no-bab-lazy-certify",
        "ReLU BaB pair batches: run the sound (float64) bound pass after each step's "
        "optimisation for every pair, instead of only for the pairs the optimisation proves")
    # relu18f, session 18 (``verifier.bab.chain_guide``): mnistfc 256x4 prop_0, 30 s, 225.2 vs
    # 138.2 domains/CPU s on vs off, the same worst margins at the same domain counts.
    chain_pass: bool = _setting(
        True, "--no-bab-chain-pass",
        "ReLU BaB pair batches on fully connected Relu chains: optimise with the general "
        "engine's bound passes instead of the chain's fused passes")
    # session 30 (verifier.milp.refine.one_kink_layer): verivital Convnet_avgpool prop_7 and
    # prop_12 (eps 0.04) unsat by MILP in 16-17 s; ReLU BaB: unknown at 120 s.
    milp_one_layer: bool = _setting(
        True, "--no-milp-one-layer",
        "auto: nets with one layer of Relu-like neurons go to MILP before branch-and-bound "
        "with up to 20000 binaries, instead of 64 as other nets")
    # "auto": reuse on Relu-only nets, else downstream. On Relu nets the CROWN rows cost more
    # than their tighter bounds gain (40 s searches, benchmarks/relu_bab_bench.py: oval21 base
    # img6638 worst margin -0.030 -> -0.012, resnet_2b prop_10 -0.103 -> -0.046, mnistfc 256x4
    # prop_0 -0.200 -> -0.179, at 1.3-1.6x the domains per second). Fully connected Relu
    # chains (mnistfc, ERAN) take downstream, with one Relu split per domain and step
    # (``NeuronSplitOptions.relu_multi_split``): relu18g, session 19, mnistfc 256x4 prop_0_0.03
    # worst margin at 100 domains -0.2586 vs -0.4175, at 2/4/8 CPU s -0.2586 vs
    # -0.3306/-0.3045/-0.2759.
    intermediate: IntermediateMode = _setting(
        "auto", "--bab-intermediate",
        "children's intermediate bounds: their parent's with the split applied (reuse), CROWN "
        "again below the newest split (downstream) or everywhere (recompute); auto: reuse on "
        "Relu-only nets other than fully connected Linear/Relu chains, else downstream")


class VerifyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timeout: float = Field(300.0, gt=0)
    method: Method = "auto"
    device: Device = "auto"
    seed: int = 0
    check_model: bool = True  # differential check of the IR against onnxruntime
    # Counterexamples must lie in the real box itself (VNN-COMP 2026 mode); by default the
    # nearest float32 to a box that holds none is accepted within the checker's 1e-4.
    strict_box: bool = False
    milp_backend: Literal["auto", "highs", "gurobi"] = "auto"
    attack: AttackConfig = AttackConfig()
    bab: BabConfig = BabConfig()

    @model_validator(mode="before")
    @classmethod
    def _guided_from_bab(cls, data):
        """``bab.guided_attack`` (the CLI's one switch, ``--no-guided-attack``) off turns off
        ``attack.guided`` too, so that the commands pass only their BaB settings."""
        if not isinstance(data, dict) or data.get("bab") is None:
            return data
        bab = data["bab"]
        guided = bab.get("guided_attack", True) if isinstance(bab, dict) else bab.guided_attack
        if guided:
            return data
        attack = data.get("attack", AttackConfig())
        attack = attack if isinstance(attack, AttackConfig) else AttackConfig(**attack)
        return {**data, "attack": attack.model_copy(update={"guided": False})}

    @classmethod
    def quick(cls, timeout: float = 30.0) -> VerifyConfig:
        return cls(timeout=timeout)
