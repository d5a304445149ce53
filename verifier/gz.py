"""Reading a file that may be gzip-compressed (detected by its magic bytes), size-capped.

VNN-COMP distributes models and specs as ``.onnx.gz`` and ``.vnnlib.gz``; both readers take
either form. Decompression stops one byte past the cap, so a gzip bomb costs at most the cap.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


def read_capped(path: str | Path, max_bytes: int, what: str, error: type[Exception]) -> bytes:
    """The (decompressed) bytes of ``path``; ``error`` naming ``what`` when the file cannot be
    read, is a broken gzip stream, or holds more than ``max_bytes``."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            data = _gunzip(f, max_bytes, what, error) if head == GZIP_MAGIC \
                else f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise error(f"{what} is larger than the limit of {max_bytes} bytes")
    return data


def _gunzip(f, max_bytes: int, what: str, error: type[Exception]) -> bytes:
    """Every gzip member, refusing output above ``max_bytes`` (``GzipFile.read(n)``
    decompresses in bounded steps, so memory stays near the cap)."""
    try:
        with gzip.GzipFile(fileobj=f) as g:
            data = g.read(max_bytes + 1)
    except EOFError:
        raise error(f"{what}: truncated gzip stream") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise error(f"{what}: corrupt gzip data ({e})") from None
    if len(data) > max_bytes:
        raise error(f"{what} decompresses to more than {max_bytes} bytes (refused as a "
                    "possible gzip bomb)")
    return data
