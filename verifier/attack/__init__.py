"""Falsification: batched PGD and sampling on the IR, and a black-box search on onnxruntime
(models the importer refuses, graphs without bound rules); counterexamples re-checked in
onnxruntime."""

from verifier.attack.blackbox import falsify_blackbox
from verifier.attack.falsify import Falsifier, falsify
from verifier.attack.objective import TorchCondition
from verifier.attack.pgd import AttackResult, attack_boxes

__all__ = ["AttackResult", "Falsifier", "TorchCondition", "attack_boxes", "falsify",
           "falsify_blackbox"]
