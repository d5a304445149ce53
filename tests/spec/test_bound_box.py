"""The bound engines cover the real box and, where a coordinate's interval holds no float32
value, its two float32 neighbours (InputRegion.bound_box): an ``unsat`` then also holds for
every float32 input an attack, or the VNN-COMP checker within its tolerance, may try."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from verifier.config import VerifyConfig
from verifier.onnx_import.loader import import_proto
from verifier.pipeline import verify
from verifier.spec import load_spec
from verifier.spec.types import float32_hull

JUST_BELOW_ONE = 1.0 - 2.0**-30  # no float32 equals it; its float32 neighbours: 1 - 2**-24, 1


def test_hull_keeps_boxes_with_a_float32_point_and_widens_the_others():
    rng = np.random.default_rng(0)
    lower = rng.normal(size=4000) * 10.0 ** rng.integers(-8, 8, size=4000)
    scale = 10.0 ** rng.integers(-12, 0, 4000)
    width = np.where(rng.random(4000) < 0.5, 0.0, np.abs(lower) * scale)
    upper = lower + width
    lo, hi = float32_hull(lower, upper)
    assert np.all(lo <= lower) and np.all(hi >= upper)
    changed = (lo != lower) | (hi != upper)
    f32_lo, f32_hi = lo.astype(np.float32), hi.astype(np.float32)
    # widened coordinates end on adjacent float32 values bracketing the real interval
    assert np.all(f32_lo[changed].astype(np.float64) == lo[changed])
    assert np.all(np.nextafter(f32_lo[changed], np.float32(np.inf)) == f32_hi[changed])
    # kept coordinates do hold a float32 value
    first = np.float32(lower[~changed]).astype(np.float64)
    first = np.where(first < lower[~changed],
                     np.nextafter(np.float32(lower[~changed]), np.float32(np.inf)), first)
    assert np.all(first <= upper[~changed])
    assert changed.any() and (~changed).any()


def test_hull_of_a_pinned_value():
    lo, hi = float32_hull(np.array([JUST_BELOW_ONE]), np.array([JUST_BELOW_ONE]))
    assert lo[0] == float(np.nextafter(np.float32(1.0), np.float32(0.0))) and hi[0] == 1.0


def floor_model():
    node = helper.make_node("Floor", ["X"], ["Y"], name="floor")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return import_proto(proto, proto.SerializeToString(), "floor")


def pinned_spec(tmp_path, threshold: float):
    text = (f"(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
            f"(assert (>= X_0 {JUST_BELOW_ONE!r}))\n(assert (<= X_0 {JUST_BELOW_ONE!r}))\n"
            f"(assert (>= Y_0 {threshold!r}))\n")
    path = tmp_path / "pinned.vnnlib"
    path.write_text(text)
    return load_spec(path)


def test_bound_box_covers_the_float32_neighbours(tmp_path):
    region = pinned_spec(tmp_path, 0.5).regions[0]
    lo, hi = region.bound_box()
    assert lo[0] < JUST_BELOW_ONE < hi[0] == 1.0


@pytest.mark.parametrize("method", ["auto", "incomplete", "milp"])
def test_no_unsat_that_a_float32_neighbour_refutes(tmp_path, method):
    """Floor is 0 on the real box but 1 at its float32 neighbour 1.0: without the attack's
    tolerance (strict box) the answer must not be unsat."""
    config = VerifyConfig(timeout=30, method=method, strict_box=True)
    result = verify(floor_model(), pinned_spec(tmp_path, 0.5), config)
    assert result.verdict != "unsat", result


def test_the_neighbour_is_a_counterexample_within_the_vnncomp_tolerance(tmp_path):
    result = verify(floor_model(), pinned_spec(tmp_path, 0.5), VerifyConfig(timeout=30))
    assert result.verdict == "sat" and result.counterexample.x[0] == 1.0


@pytest.mark.parametrize("strict", [False, True])
def test_unsat_that_holds_for_the_neighbours_too(tmp_path, strict):
    config = VerifyConfig(timeout=30, strict_box=strict)
    result = verify(floor_model(), pinned_spec(tmp_path, 1.5), config)
    assert result.verdict == "unsat", result
