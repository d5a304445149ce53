"""VNN-COMP suites: where their ``instances.csv`` files are, their instances and known answers,
and which of them a bench run keeps."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_EXPECTED_ALIASES = {"holds": "unsat", "violated": "sat", "safe": "unsat", "unsafe": "sat"}


class BenchInputError(Exception):
    """A suite cannot be read (missing or malformed instances.csv)."""


@dataclass(frozen=True)
class Instance:
    benchmark: str
    onnx: str  # as written in instances.csv (relative to it)
    vnnlib: str
    onnx_path: Path
    vnnlib_path: Path
    timeout: float
    expected: str = ""  # sat / unsat / unknown / "" (no expected.csv row)




def find_suites(path: str | Path) -> list[Path]:
    """instances.csv files for a csv path, a benchmark folder, or a folder of benchmark folders."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BenchInputError(f"no such file or directory: {path}")
    if (path / "instances.csv").is_file():
        return [path / "instances.csv"]
    suites = sorted(p / "instances.csv" for p in path.iterdir() if (p / "instances.csv").is_file())
    if not suites:
        raise BenchInputError(f"{path} has no instances.csv, nor sub-folders with one")
    return suites


def _key(onnx: str, vnnlib: str) -> tuple[str, str]:
    return os.path.normpath(onnx.strip()), os.path.normpath(vnnlib.strip())


def read_expected(csv_path: Path) -> dict[tuple[str, str], str]:
    """expected.csv beside ``csv_path`` (header onnx,vnnlib,expected,...), or {} when absent."""
    path = csv_path.parent / "expected.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        if not row.get("onnx") or not row.get("vnnlib"):
            continue
        value = (row.get("expected") or "").strip().lower()
        out[_key(row["onnx"], row["vnnlib"])] = _EXPECTED_ALIASES.get(value, value)
    return out


def read_instances(csv_path: Path) -> list[Instance]:
    """Parse a VNN-COMP instances.csv (no header; onnx,vnnlib,timeout relative to the csv)."""
    benchmark = csv_path.parent.name
    expected = read_expected(csv_path)
    instances = []
    try:
        with csv_path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchInputError(f"cannot read {csv_path}: {exc}") from None
    for lineno, row in enumerate(rows, 1):
        if len(row) < 3:
            raise BenchInputError(f"{csv_path}:{lineno}: expected onnx,vnnlib,timeout; got {row}")
        onnx, vnnlib = row[0].strip(), row[1].strip()
        try:
            timeout = float(row[2])
        except ValueError:
            raise BenchInputError(f"{csv_path}:{lineno}: bad timeout {row[2]!r}") from None
        instances.append(Instance(
            benchmark, onnx, vnnlib, csv_path.parent / onnx, csv_path.parent / vnnlib,
            timeout, expected.get(_key(onnx, vnnlib), ""),
        ))
    return instances


def select(instances: Iterable[Instance], pattern: str | None = None,
           limit: int | None = None, sample: int | None = None) -> list[Instance]:
    """Keep instances whose onnx or vnnlib path matches ``pattern`` (re.search); of those,
    ``sample`` spread evenly over each suite (its first, its last and equal steps between:
    every model and property region gets a say, unlike the first N), then the first ``limit``."""
    regex = re.compile(pattern) if pattern else None
    chosen = [i for i in instances
              if regex is None or regex.search(i.onnx) or regex.search(i.vnnlib)]
    if sample is not None:
        suites: dict[str, list[Instance]] = {}
        for i in chosen:
            suites.setdefault(i.benchmark, []).append(i)
        chosen = [i for group in suites.values() for i in _spread(group, sample)]
    return chosen[:limit] if limit is not None else chosen


def _spread(items: list, n: int) -> list:
    """n items at evenly spaced positions (all of them when n >= len)."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return items[:n]
    return [items[round(k * (len(items) - 1) / (n - 1))] for k in range(n)]


def effective_timeout(instance: Instance, cap: float | None) -> float:
    return min(instance.timeout, cap) if cap else instance.timeout
