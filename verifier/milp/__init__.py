"""Complete verification by mixed-integer linear programming (HiGHS or Gurobi backends)."""

from verifier.milp.encode import MilpUnsupportedError, check_supported, unsupported_ops
from verifier.milp.verify import MilpOptions, milp_verify

__all__ = ["MilpOptions", "MilpUnsupportedError", "check_supported", "milp_verify",
           "unsupported_ops"]
