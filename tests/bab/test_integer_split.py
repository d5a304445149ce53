"""Integer inputs in input splitting (verifier/bab/integer_split.py): the inputs read only through
a cast to int are found; splits at integers and integer cells cover every float32 point of the
box and fix one integer per cell; the search on a patch-pasting network (positions free, image
fixed) matches the answer enumerated in onnxruntime-equivalent IR evaluation, sat and unsat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bounds.engine.forward import run_graph
from tests.bab.test_input_split import make_search
from tests.onnx_import.test_scatter_window import N_DATA, N_IN, C, H, load, window_model
from verifier.bab.input_split import Domains, bisect
from verifier.bab.integer_split import integer_cells, integer_dims
from verifier.spec.types import InputRegion, OutputCondition

F64 = torch.float64


def test_integer_dims_are_the_cast_positions():
    graph = load(window_model(2, "image")).graph
    dims = integer_dims(graph)
    assert dims.nonzero().ravel().tolist() == [N_DATA, N_DATA + 1]


def _float32_points(lo: float, hi: float, rng, n: int = 400) -> np.ndarray:
    """float32 values in [lo, hi]: random ones, both ends and the neighbours of integers."""
    pts = rng.uniform(lo, hi, n).astype(np.float32)
    ints = np.arange(np.ceil(lo), np.floor(hi) + 1, dtype=np.float32)
    near = np.concatenate([ints, np.nextafter(ints, np.float32(-np.inf)),
                           np.nextafter(ints, np.float32(np.inf))])
    pts = np.concatenate([pts, near, np.float32([lo, hi])]).astype(np.float64)
    return pts[(pts >= lo) & (pts <= hi)]


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 62.0), (0.3, 7.9), (3.0, 4.0), (5.5, 6.0)])
def test_bisect_at_an_integer_covers_every_float32_point(lo, hi):
    dom = Domains(torch.tensor([[lo, 0.0]], dtype=F64), torch.tensor([[hi, 1.0]], dtype=F64),
                  torch.zeros(1, dtype=F64), torch.zeros((1, 1), dtype=torch.bool))
    kids = bisect(dom, torch.tensor([0]), torch.tensor([True, False]))
    (l0, r0), (l1, r1) = kids.lower[:, 0].tolist(), kids.upper[:, 0].tolist()
    pts = _float32_points(lo, hi, np.random.default_rng(0))
    inside = ((pts >= l0) & (pts <= l1)) | ((pts >= r0) & (pts <= r1))
    assert inside.all(), pts[~inside]
    if np.floor(lo) < np.floor(hi):  # two integers' values: the children split them
        assert np.floor(l1) < np.floor(r0) and np.floor(l1) == np.floor(r0) - 1
        assert kids.upper[0, 1] == 1.0 and kids.lower[1, 1] == 0.0


def test_integer_cells_cover_the_box_one_integer_each():
    lo = torch.tensor([0.5, 2.0, 0.25, 0.0], dtype=F64)
    hi = torch.tensor([4.0, 2.0, 6.75, 3.0], dtype=F64)
    integer = torch.tensor([True, True, True, False])
    assert integer_cells(lo, hi, integer, 1000) is None  # a free dim that is not integer
    hi[3] = 1e-7  # a fixed value widened to its float32 neighbours
    cells = integer_cells(lo, hi, integer, 1000)
    assert integer_cells(lo, hi, integer, 20) is None  # 5 x 7 cells > 20
    cl, ch = cells
    assert len(cl) == 5 * 7
    assert (torch.floor(cl) == torch.floor(ch))[:, [0, 2]].all()
    assert (cl[:, [1, 3]] == lo[[1, 3]]).all() and (ch[:, [1, 3]] == hi[[1, 3]]).all()
    assert (cl >= lo).all() and (ch <= hi).all() and (cl <= ch).all()
    rng = np.random.default_rng(1)
    for d in (0, 2):
        pts = _float32_points(float(lo[d]), float(hi[d]), rng)
        hit = ((pts[:, None] >= cl[:, d].numpy()) & (pts[:, None] <= ch[:, d].numpy()))
        assert hit.any(1).all()


def _patch_region(model, row: int, threshold: float) -> tuple[InputRegion, float]:
    """Positions free in [0, C + 1] x [0, H + 1], the image fixed; violated iff output
    ``row`` <= threshold. Returns the region and the true minimum over all positions."""
    graph = load(model).graph
    rng = np.random.default_rng(4)
    image = rng.uniform(-1.0, 1.0, N_DATA)  # widened to float32 neighbours by bound_box
    lo, hi = np.concatenate([image, [0.0, 0.0]]), np.concatenate([image, [C + 1.0, H + 1.0]])
    grid = np.array([[x, y] for x in range(C + 2) for y in range(H + 2)], dtype=np.float64)
    pts = np.repeat(lo[None], len(grid), 0)
    pts[:, N_DATA:] = grid
    y = run_graph(graph, torch.tensor(pts))[0].reshape(len(grid), -1)[:, row]
    coef = np.zeros((1, 1, N_DATA))
    coef[0, 0, row] = 1.0
    region = InputRegion(lo, hi, OutputCondition(coef, np.array([[threshold]])))
    return region, float(y.min())


@pytest.mark.parametrize("delta", [-0.05, 0.05], ids=["unsat", "sat"])
def test_search_on_a_patch_network_matches_enumeration(delta):
    model = window_model(2, "image")
    graph = load(model).graph
    row = 1 * H * 4 + 2 * 4 + 1  # channel 1, row 2, column 1: written by some positions
    region, true_min = _patch_region(model, row, 0.0)
    region, _ = _patch_region(model, row, true_min + delta)
    out = make_search(graph, region).run()
    assert out.verdict == ("sat" if delta > 0 else "unsat"), out.stats
    assert out.stats.get("integer_cells") == (C + 2) * (H + 2)
    if delta > 0:
        y = run_graph(graph, torch.as_tensor(out.counterexample, dtype=F64).reshape(1, N_IN))
        assert float(y[0].reshape(-1)[row]) <= true_min + delta


@pytest.mark.parametrize("delta", [-0.05, 0.05], ids=["unsat", "sat"])
def test_auto_sends_a_box_free_only_in_integer_inputs_to_input_splitting(delta):
    """62 inputs (over INPUT_SPLIT_MAX_INPUTS), but only the two positions are free: ``auto``
    proves the unsat case by integer cells (method bab-input); the sat case may fall to the
    first attack already."""
    from verifier.config import VerifyConfig
    from verifier.pipeline import verify
    from verifier.spec.types import Spec

    model = window_model(2, "image")
    row = 1 * H * 4 + 2 * 4 + 1
    _, true_min = _patch_region(model, row, 0.0)
    region, _ = _patch_region(model, row, true_min + delta)
    spec = Spec((region,), N_IN, N_DATA)
    res = verify(load(model), spec, VerifyConfig(timeout=60))
    if delta > 0:
        assert res.verdict == "sat" and res.method in ("attack", "bab-input"), res
    else:
        assert (res.verdict, res.method) == ("unsat", "bab-input"), res
