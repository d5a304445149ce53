"""nncert: the verifier (import, specs, strategies, branch-and-bound, MILP, CLI)."""

import bounds  # noqa: F401  (sets the OpenMP wait policy before torch loads; see there)
