"""python -m verifier.gate {spec robustness,gate} ..."""

import sys

from verifier.gate.cli import main

sys.exit(main())
