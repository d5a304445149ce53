"""python -m verifier.gate {spec robustness,gate,radius} ..."""

import sys

from verifier.gate.cli import main

sys.exit(main())
