"""Falsification: batched PGD and sampling on the IR, counterexamples re-checked in onnxruntime."""

from verifier.attack.falsify import falsify
from verifier.attack.objective import TorchCondition
from verifier.attack.pgd import AttackResult, attack_boxes

__all__ = ["AttackResult", "TorchCondition", "attack_boxes", "falsify"]
