"""nncert REST service."""

import bounds  # noqa: F401  (sets the OpenMP wait policy before torch loads; see there)
