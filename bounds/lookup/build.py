"""Build, write and verify branching-point tables (offline; ``nncert tables build|verify``).

File format (``FORMAT_VERSION`` 1), one ``<key>.npz`` per table (``np.savez_compressed``, no
pickles):

* ``points``: float32 [n, n]; ``points[i, j]`` is the optimised split point of the interval
  [x_i, x_j] (x_k = lo + k step), NaN where i >= j;
* ``meta``: a JSON string: format_version, table_version, key, op, attrs, grid, objective,
  search parameters, and ``payload_sha256`` = sha256(points bytes (C order, little endian)
  + the canonical JSON of the other meta fields).

``manifest.json`` in the same folder lists every table: file, sha256 of the whole file, the
payload hash, versions, grid, size and build time. Loading checks both hashes
(:mod:`bounds.lookup.tables`), so a table edited in any way is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bounds.lookup.objective import (
    SEARCH,
    TABLE_VERSION,
    TableSpec,
    optimise_points,
    relax_fn,
    table_specs,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_DIR = Path(__file__).resolve().parent / "data"
log = logging.getLogger(__name__)


class TableError(RuntimeError):
    """A branching-point table is missing, of an unknown format, or fails its hash check."""


def file_name(key: str) -> str:
    """The data file of a table key (``Gelu:tanh`` -> ``gelu_tanh.npz``)."""
    return key.lower().replace(":", "_") + ".npz"


def canonical(obj) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces) used inside hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def payload_hash(points: np.ndarray, meta: dict) -> str:
    """sha256 of the points (float32, little-endian, C order) and the meta without its hash."""
    body = {k: v for k, v in meta.items() if k != "payload_sha256"}
    data = np.ascontiguousarray(points, dtype="<f4").tobytes()
    return hashlib.sha256(data + canonical(body)).hexdigest()


def compute_points(spec: TableSpec) -> np.ndarray:
    """The optimised split point of every grid cell l < u (float32 [n, n], NaN elsewhere)."""
    x = spec.nodes()
    lo, up = torch.meshgrid(x, x, indexing="ij")
    mask = lo < up
    pts, _ = optimise_points(relax_fn(spec), lo[mask], up[mask], **SEARCH)
    out = torch.full((spec.n, spec.n), float("nan"), dtype=torch.float64)
    out[mask] = pts
    # float32 rounding may land on an end of a narrow cell; keep every stored point inside
    out32 = out.to(torch.float32)
    lo32, up32 = lo.to(torch.float32), up.to(torch.float32)
    inside = torch.minimum(torch.maximum(out32, torch.nextafter(lo32, up32)),
                           torch.nextafter(up32, lo32))
    return torch.where(mask, inside, out32).numpy()


def table_meta(spec: TableSpec) -> dict:
    """Everything stored with a table except the points and its hash."""
    return {
        "format_version": FORMAT_VERSION, "table_version": TABLE_VERSION, "key": spec.key,
        "op": spec.op, "attrs": dict(spec.attrs), "grid": spec.grid(),
        "objective": "sum over both halves of the area between the default relaxation planes",
        "search": dict(SEARCH),
    }


def encode(points: np.ndarray, meta: dict) -> bytes:
    """The .npz bytes of a table (meta gets its payload hash)."""
    meta = dict(meta, payload_sha256=payload_hash(points, meta))
    buf = io.BytesIO()
    np.savez_compressed(buf, points=points.astype("<f4"), meta=np.array(json.dumps(meta)))
    return buf.getvalue()


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, or an empty one when there is none yet."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {"format_version": FORMAT_VERSION, "tables": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TableError(f"{path}: table format {manifest.get('format_version')!r} is not "
                         f"supported (this nncert reads format {FORMAT_VERSION})")
    return manifest


def build(keys: list[str] | None = None, out: Path | None = None) -> dict[str, dict]:
    """Build tables (all of :func:`table_specs` by default) into ``out``; update its manifest.

    Returns the manifest entries of the tables built (with ``build_seconds``).
    """
    folder = Path(out) if out is not None else DEFAULT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    specs = table_specs()
    unknown = [k for k in keys or [] if k not in specs]
    if unknown:
        raise TableError(f"no table specification for {unknown}; known: {sorted(specs)}")
    manifest = read_manifest(folder)
    built = {}
    for key in keys or list(specs):
        spec = specs[key]
        start = time.perf_counter()
        points = compute_points(spec)
        seconds = time.perf_counter() - start
        meta = table_meta(spec)
        data = encode(points, meta)
        (folder / file_name(key)).write_bytes(data)
        entry = {
            "file": file_name(key), "sha256": hashlib.sha256(data).hexdigest(),
            "payload_sha256": payload_hash(points, meta), "table_version": TABLE_VERSION,
            "op": spec.op, "attrs": dict(spec.attrs), "grid": spec.grid(), "bytes": len(data),
            "build_seconds": round(seconds, 2), "torch": torch.__version__,
        }
        manifest["tables"][key] = built[key] = entry
        log.info("table %s: %d cells in %.1f s, %d bytes", key, spec.n * (spec.n - 1) // 2,
                 seconds, len(data))
        # written after every table so an interrupted build leaves a consistent folder
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return built


def check_bytes(key: str, data: bytes, entry: dict) -> tuple[np.ndarray, dict]:
    """Decode a table file and check both hashes against its manifest entry; raise TableError."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise TableError(f"branching-point table {key!r} ({entry.get('file')}): sha256 {digest} "
                         f"does not match the manifest ({entry.get('sha256')}); the file was "
                         "modified or corrupted; rebuild it with `nncert tables build`")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        points, meta = npz["points"], json.loads(str(npz["meta"]))
    if meta.get("format_version") != FORMAT_VERSION:
        raise TableError(f"table {key!r}: format {meta.get('format_version')!r} is not supported")
    if payload_hash(points, meta) != meta.get("payload_sha256") or \
            meta["payload_sha256"] != entry.get("payload_sha256"):
        raise TableError(f"table {key!r}: payload hash mismatch (points or metadata altered)")
    if meta.get("key") != key:
        raise TableError(f"table file {entry.get('file')} holds {meta.get('key')!r}, not {key!r}")
    return points, meta


def verify(folder: Path | None = None) -> dict[str, str]:
    """Check every table listed in the manifest; returns key -> "ok" or the error text."""
    folder = Path(folder) if folder is not None else DEFAULT_DIR
    manifest = read_manifest(folder)
    results = {}
    for key, entry in sorted(manifest["tables"].items()):
        try:
            check_bytes(key, (folder / entry["file"]).read_bytes(), entry)
            results[key] = "ok"
        except (TableError, OSError, ValueError, KeyError) as exc:
            results[key] = f"{type(exc).__name__}: {exc}"
    return results
