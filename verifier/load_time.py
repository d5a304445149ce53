"""How long reading a model or spec file may take, estimated from its size before it starts.

Reading and parsing a file cannot read the clock (one protobuf parse, one VNN-LIB parse), so
a run checks before each one that the time left covers it; when it does not, the run answers
``timeout`` at once instead of starting a step that the watchdog would have to abandon.

Rates measured on this project's CPU (session 30, warm process): ONNX models 250-300 MB/s
(read, parse and import to the IR), VNN-LIB specs about 15 MB/s. The estimates below are
5x slower, so that a loaded machine still fits; a gzip file is counted at 4x its size.
"""

from __future__ import annotations

import os
from pathlib import Path

from verifier.gz import GZIP_MAGIC

MODEL_BYTES_PER_S = 50e6
SPEC_BYTES_PER_S = 3e6
GZIP_EXPANSION = 4
# Per file: opening it, the first use of a parser, the importer's passes over a small graph.
FIXED_S = 0.01


class NoTimeToLoad(Exception):  # noqa: N818 - a verdict, not an error: the run times out
    """The time left cannot cover reading an input; the message names which one."""


def estimated_load_s(path: str | Path, bytes_per_s: float) -> float:
    """Seconds reading and parsing ``path`` may take (only the fixed part when its size
    cannot be read: the read then raises the file's own error)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if f.read(2) == GZIP_MAGIC:
                size *= GZIP_EXPANSION
    except OSError:
        return FIXED_S
    return FIXED_S + size / bytes_per_s


def require_time_to_load(path: str | Path, what: str, bytes_per_s: float, deadline: float,
                         now: float) -> None:
    """Raise NoTimeToLoad when ``deadline`` (monotonic seconds) leaves less than reading
    ``path`` (``what``: "the model", "the spec") is estimated to take."""
    need = estimated_load_s(path, bytes_per_s)
    if deadline - now < need:
        raise NoTimeToLoad(f"the timeout left {max(deadline - now, 0.0):.3f} s for reading "
                           f"{what}, which needs about {need:.3f} s")
