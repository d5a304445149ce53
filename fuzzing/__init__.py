"""Soundness fuzzing: random small networks and properties, MILP oracle vs every method.

A test harness, not part of the shipped packages (run from the repository root: the tests and
``python -m benchmarks.*_campaign`` import it from there).

``make_case(seed, index)`` builds a case (cases.py), ``run_case(case)`` runs the oracle and the
methods and lists disagreements (harness.py); ``python -m benchmarks.fuzz_campaign`` runs many.
"""

from fuzzing.cases import Case, make_case
from fuzzing.harness import METHODS, CaseResult, run_case, save_case

__all__ = ["METHODS", "Case", "CaseResult", "make_case", "run_case", "save_case"]
