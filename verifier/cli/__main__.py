"""python -m verifier.cli"""

from verifier.cli import entry

entry()
