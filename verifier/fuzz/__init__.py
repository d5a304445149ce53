"""Soundness fuzzing: random small networks and properties, MILP oracle vs every method.

``make_case(seed, index)`` builds a case (cases.py), ``run_case(case)`` runs the oracle and the
methods and lists disagreements (harness.py); ``python -m benchmarks.fuzz_campaign`` runs many.
"""

from verifier.fuzz.cases import Case, make_case
from verifier.fuzz.harness import METHODS, CaseResult, run_case, save_case

__all__ = ["METHODS", "Case", "CaseResult", "make_case", "run_case", "save_case"]
