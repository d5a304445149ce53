"""The shipped branching-point tables: complete, hash-checked, every point inside its interval,
and close to a fresh optimisation on off-grid intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.lookup.build import DEFAULT_DIR, check_bytes, read_manifest, verify
from bounds.lookup.objective import SPECS, TABLE_VERSION, optimise_points, relax_fn, split_area
from bounds.lookup.tables import TableStore, branch_points

MANIFEST = read_manifest(DEFAULT_DIR)


def test_every_spec_is_shipped_and_verifies():
    assert set(MANIFEST["tables"]) == set(SPECS)
    assert set(verify(DEFAULT_DIR).values()) == {"ok"}
    for key, entry in MANIFEST["tables"].items():
        assert entry["table_version"] == TABLE_VERSION
        assert entry["grid"] == SPECS[key].grid()
    total = sum((DEFAULT_DIR / e["file"]).stat().st_size for e in MANIFEST["tables"].values())
    assert total < 4_000_000  # the tables ship inside the package


@pytest.mark.parametrize("key", sorted(SPECS))
def test_stored_points_strictly_inside(key):
    entry = MANIFEST["tables"][key]
    points, meta = check_bytes(key, (DEFAULT_DIR / entry["file"]).read_bytes(), entry)
    assert points.dtype == np.float32 and meta["key"] == key and meta["op"] == SPECS[key].op
    x = SPECS[key].nodes().numpy().astype(np.float32)
    lo, up = np.meshgrid(x, x, indexing="ij")
    cell = lo < up
    assert np.isnan(points[~cell]).all()
    assert np.isfinite(points[cell]).all()
    assert (points[cell] > lo[cell]).all() and (points[cell] < up[cell]).all()


def _sample_cells(spec, count: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ends = spec.lo + (spec.hi - spec.lo) * torch.rand(count, 2, generator=gen, dtype=torch.float64)
    lower, upper = ends.min(1).values, ends.max(1).values
    keep = upper - lower > 1e-2
    return lower[keep], upper[keep]


@pytest.mark.parametrize("key", sorted(SPECS))
def test_lookup_matches_fresh_optimisation(key):
    """Off-grid intervals: the looked-up point's area is close to a fresh optimum's."""
    spec = SPECS[key]
    relax = relax_fn(spec)
    lower, upper = _sample_cells(spec, 160, seed=len(key))
    p = branch_points(spec.op, lower, upper, attrs=dict(spec.attrs))
    assert ((p > lower) & (p < upper)).all()
    _, best = optimise_points(relax, lower, upper)
    got = split_area(relax, lower, upper, p)
    mid = split_area(relax, lower, upper, (lower + upper) / 2)
    excess = (got - best) / best.clamp(min=1e-9)
    # interpolation error only (grid step 0.05); the optimum may jump between local minima, so
    # a few cells near a jump are allowed to be worse
    assert float(excess.quantile(0.9)) < 5e-3, key
    assert float(excess.max()) < 0.25, key
    assert float(got.sum()) <= float(mid.sum()), key


def test_lookup_equals_stored_point_on_grid_nodes():
    spec = SPECS["Sigmoid"]
    entry = MANIFEST["tables"]["Sigmoid"]
    points, _ = check_bytes("Sigmoid", (DEFAULT_DIR / entry["file"]).read_bytes(), entry)
    x = spec.nodes()
    i, j = torch.tensor([0, 10, 100, 160, 300]), torch.tensor([5, 200, 101, 320, 301])
    got = branch_points("Sigmoid", x[i], x[j], store=TableStore(DEFAULT_DIR))
    want = torch.from_numpy(points[i.numpy(), j.numpy()]).to(torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.702, 0.5])
def test_swish_at_another_alpha_reads_silu_table_at_scaled_ends(alpha):
    """x sigmoid(a x) = g(a x) / a: SiLU's table read at [a l, a u] gives the optimum of the
    op's own planes (``Split.scale_of``), as close as SiLU's lookups are to theirs."""
    from bounds.graph import Node
    from bounds.registry import rules

    rule, attrs = rules().get("Swish"), {"alpha": alpha}
    node = Node("swish", "Swish", ("x",), (1,), attrs=attrs)

    def relax(lower, upper):
        return rule.relax(node, lower, upper)

    lower, upper = _sample_cells(SPECS["Swish"], 160, seed=7)
    lower, upper = lower / alpha, upper / alpha  # inside the table's grid once scaled
    p = branch_points("Swish", lower, upper, attrs=attrs)
    assert ((p > lower) & (p < upper)).all()
    _, best = optimise_points(relax, lower, upper)
    got = split_area(relax, lower, upper, p)
    mid = split_area(relax, lower, upper, (lower + upper) / 2)
    excess = (got - best) / best.clamp(min=1e-9)
    assert float(excess.quantile(0.9)) < 5e-3 and float(excess.max()) < 0.25
    assert float(got.sum()) < 0.999 * float(mid.sum())
