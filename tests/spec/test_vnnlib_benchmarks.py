"""Every VNN-LIB file of the shared benchmarks parses, with the expected sizes and regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BENCHMARKS
from verifier.spec import load_spec

SIZES = {  # benchmark: (n_inputs, n_outputs)
    "acasxu": (5, 5), "cifar10_resnet": (3072, 10), "eran": (784, 10),
    "marabou-cifar10": (3072, 10), "mnistfc": (784, 10), "nonlinear_digits": (64, 10),
    "oval21": (3072, 10), "verivital": (784, 10),
}


def spec_files() -> list[Path]:
    return sorted(p for p in BENCHMARKS.glob("*/vnnlib/*")
                  if p.name.endswith((".vnnlib", ".vnnlib.gz")))


def fast_subset() -> list[Path]:
    by_bench: dict[str, list[Path]] = {}
    for p in spec_files():
        by_bench.setdefault(p.parts[-3], []).append(p)
    return [p for files in by_bench.values() for p in files[:3]]


def check(path: Path) -> None:
    s = load_spec(path)
    bench = path.parts[-3]
    if bench in SIZES:
        assert (s.n_inputs, s.n_outputs) == SIZES[bench]
    assert s.regions, "every benchmark property has a non-empty input region"
    for r in s.regions:
        assert r.lower.shape == r.upper.shape == (s.n_inputs,)
        assert np.all(np.isfinite(r.lower)) and np.all(np.isfinite(r.upper))
        assert np.all(r.lower <= r.upper)
        c = r.condition
        assert c.coef.shape[0] >= 1 and c.coef.shape[2] == s.n_outputs
        assert c.rhs.shape == c.coef.shape[:2]


@pytest.mark.parametrize("path", fast_subset(), ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_benchmark_subset(path, benchmarks_dir):
    check(path)


@pytest.mark.slow
def test_all_benchmark_specs(benchmarks_dir):
    files = spec_files()
    assert len(files) > 400
    for p in files:
        check(p)


def test_acasxu_regions(benchmarks_dir):
    d = benchmarks_dir / "acasxu" / "vnnlib"
    counts = {p.stem: len(load_spec(p).regions) for p in d.glob("*.vnnlib")}
    assert counts["prop_6"] == 2
    assert all(n == 1 for k, n in counts.items() if k != "prop_6")
    s = load_spec(d / "prop_6.vnnlib")
    assert all(r.condition.n_disjuncts == 4 for r in s.regions)
    # unsafe iff coc (Y_0) is not minimal: Y_1 <= Y_0
    x = (s.regions[1].lower + s.regions[1].upper) / 2
    assert s.violated_by(x, [1, 0, 2, 2, 2]) and not s.violated_by(x, [0, 1, 1, 1, 1])
    p1 = load_spec(d / "prop_1.vnnlib").regions[0].condition  # unsafe iff Y_0 >= 3.99...
    assert p1.holds([4, 0, 0, 0, 0]) and not p1.holds([3, 0, 0, 0, 0])


def test_robustness_spec_semantics(benchmarks_dir):
    # mnistfc prop_0: label 8; unsafe iff some other class scores at least as high
    s = load_spec(benchmarks_dir / "mnistfc" / "vnnlib" / "prop_0_0.03.vnnlib")
    c = s.regions[0].condition
    assert c.n_disjuncts == 9
    y = np.zeros(10)
    y[8] = 1
    assert not c.holds(y)
    y[3] = 1
    assert c.holds(y)
