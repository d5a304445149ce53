"""Content-addressed artifacts on disk: ``<data>/artifacts/<kind>/<sha256>``.

Files are named by the SHA-256 of their bytes only; uploaded names never reach the
filesystem. Writes go through a temporary file and a rename, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

KINDS = ("models", "specs")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def is_digest(text: str) -> bool:
    """True for a lowercase hex SHA-256 (the only form an artifact id can take)."""
    return bool(_DIGEST.match(text))


class Artifacts:
    """Read and write artifacts of one data directory."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir) / "artifacts"
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, digest: str) -> Path:
        if kind not in KINDS or not is_digest(digest):
            raise ValueError(f"bad artifact reference {kind}/{digest!r}")
        return self.root / kind / digest

    def put(self, kind: str, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(kind, digest)
        if target.exists():
            return digest
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def exists(self, kind: str, digest: str) -> bool:
        return is_digest(digest) and self.path(kind, digest).is_file()
