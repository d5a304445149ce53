"""The unusual-model campaign (benchmarks/unusual_campaign.py): generator, specs, the harness's
independent checks (each shown to catch a planted wrong answer), and a fast slice of real cases
run through the killable worker."""

from __future__ import annotations

import gzip
from dataclasses import replace

import numpy as np
import pytest

from fuzzing.unusual_blocks import IMAGE_BLOCKS, VECTOR_BLOCKS
from fuzzing.unusual_cases import make_unusual_case, write_case
from fuzzing.unusual_harness import (
    judge,
    new_result,
    refusal_is_clear,
    run_unusual_case,
    sample_case,
)
from fuzzing.unusual_nets import random_unusual_net
from fuzzing.unusual_oracle import box_points, check_counterexample, ort_outputs
from fuzzing.unusual_specs import UNUSUAL_SPEC_KINDS
from verifier.spec import load_spec

SEED = 16


def _net_with(block: str):
    """A model featuring ``block`` (image blocks need a fitting input: try a few seeds)."""
    for seed in range(40):
        try:
            return random_unusual_net(np.random.default_rng([SEED, seed]), (block,))
        except ValueError:
            continue
    raise AssertionError(f"no input drawn fits block {block}")


@pytest.mark.parametrize("block", sorted({**IMAGE_BLOCKS, **VECTOR_BLOCKS}))
def test_every_block_builds_a_model_that_onnxruntime_runs(block):
    net = _net_with(block)
    x = np.random.default_rng(0).uniform(-1, 1, (3, net.n_in))
    y = ort_outputs(net.onnx_bytes, x, net.input_shape)
    assert y.shape == (3, net.n_out) and np.all(np.isfinite(y))
    assert net.ops, block


@pytest.mark.parametrize("image", ["grid_sample", "reduce_img"])
def test_blocks_of_older_opsets_run_beside_newer_ones(image):
    """A block that raises the opset (Swish: 24) beside blocks written in older forms (a
    reduction's axes attribute, GridSample's "bilinear"): the model is upgraded to one valid
    opset that onnxruntime runs (check_model, then ORT, refused it before)."""
    blocks = (image, "layer_norm", "gated")
    for seed in range(200):
        try:
            net = random_unusual_net(np.random.default_rng([SEED, seed]), blocks)
        except ValueError:
            continue
        if "gated:swish_op" in net.ops and "layer_norm:op" not in net.ops:
            break
    else:
        raise AssertionError("no seed drew the Swish op with a decomposed LayerNorm")
    x = np.random.default_rng(0).uniform(-1, 1, (3, net.n_in))
    assert np.all(np.isfinite(ort_outputs(net.onnx_bytes, x, net.input_shape)))


def test_generation_is_deterministic():
    a, b = make_unusual_case(SEED, 7), make_unusual_case(SEED, 7)
    assert a.net.onnx_bytes == b.net.onnx_bytes and a.vnnlib == b.vnnlib and a.gz == b.gz


@pytest.mark.parametrize("kind", UNUSUAL_SPEC_KINDS)
@pytest.mark.parametrize("gz", [False, True])
def test_spec_files_parse_to_the_generator_arrays(kind, gz, tmp_path):
    case = make_unusual_case(SEED, 3, kind=kind)
    case = replace(case, gz=gz)
    _, spec_path = write_case(case, tmp_path)
    assert spec_path.name.endswith(".gz") == gz
    if gz:
        assert gzip.decompress(spec_path.read_bytes()).decode() == case.vnnlib
    spec = load_spec(spec_path)
    assert len(spec.regions) == len(case.parts)
    for region, part in zip(spec.regions, case.parts, strict=True):
        lo, hi = part.boxes[0]
        assert np.array_equal(region.lower, lo) and np.array_equal(region.upper, hi)
        d, k = part.rhs.shape
        assert np.array_equal(region.condition.coef[:d, :k], part.coef)
        assert np.array_equal(region.condition.rhs[:d, :k], part.rhs)
        assert np.all(np.isinf(region.condition.rhs[:d, k:]))
        assert np.all(np.isinf(region.condition.rhs[d:]))
    if kind == "disjuncts":
        assert case.n_disjuncts >= 1000
    if kind == "regions":
        assert len(case.parts) >= 2


def test_pinned_coordinates_hold_no_float32_and_sample_their_neighbours():
    case = make_unusual_case(SEED, 1, kind="pinned")
    lo, hi = case.parts[0].boxes[0]
    pinned = lo == hi
    assert pinned.sum() >= 1 and (~pinned).sum() >= 1
    assert np.all(lo[pinned].astype(np.float32).astype(np.float64) != lo[pinned])
    pts, inside = box_points(lo, hi, 50, 8, np.random.default_rng(0))
    assert not inside.any()  # no float32 point lies exactly on a non-float32 value
    assert np.all(np.abs(pts[:, pinned] - lo[pinned]) <= np.abs(lo[pinned]) * 2 ** -23)
    assert np.array_equal(pts, pts.astype(np.float32).astype(np.float64))


def _case_with_violation():
    for index in range(60):
        case = make_unusual_case(SEED, index, kind="box")
        best = sample_case(case).best
        if best["inside"] >= 0:
            return case, best
    raise AssertionError("no sampled violation in 60 box cases")


def test_judge_flags_unsat_against_a_sampled_violation():
    case, best = _case_with_violation()
    res = new_result(case)
    res.sampled_inside = best["inside"]
    judge(case, res, {"status": "unsat", "time_s": 0.1}, timeout=2.0)
    assert res.problem_classes() == {"disagreement"}


def test_judge_checks_counterexamples_independently():
    case, _ = _case_with_violation()
    lo, hi = case.parts[0].boxes[0]
    outside = (hi + 0.5).astype(np.float32).astype(np.float64)
    res = new_result(case)
    judge(case, res, {"status": "sat", "x": outside.tolist(), "time_s": 0.1}, timeout=2.0)
    assert res.problem_classes() == {"disagreement"} and res.cex_check.startswith("invalid")
    assert check_counterexample(case.net.onnx_bytes, case.net.input_shape, case.parts,
                                np.full(case.net.n_in, np.nan)).startswith("invalid")


def test_judge_flags_overruns_and_kills():
    case = make_unusual_case(SEED, 0)
    late, killed = new_result(case), new_result(case)
    judge(case, late, {"status": "timeout", "time_s": 3.2}, timeout=2.0)
    judge(case, killed, None, timeout=2.0)
    assert late.problem_classes() == {"overrun"} and killed.outcome == "killed"
    assert killed.problem_classes() == {"overrun"}


def test_refusals_must_name_the_op_or_the_mismatch():
    ops = {"ArgMax", "Gemm"}
    assert refusal_is_clear("unsupported operator 'ArgMax' (node 'argmax_3')", ops)
    assert refusal_is_clear("imported model disagrees: relative error 0.002 > 1e-4", ops)
    assert not refusal_is_clear("cannot handle this model", ops)


FAST_SLICE = range(8)


@pytest.fixture(scope="module")
def slice_results():
    worker, results = None, []
    try:
        for index in FAST_SLICE:
            res, worker = run_unusual_case(make_unusual_case(SEED, index), worker, timeout=1.0)
            results.append(res)
    finally:
        if worker is not None:
            worker.close()
    return results


def test_fast_slice_has_no_disagreement_overrun_or_silent_import_mismatch(slice_results):
    bad = [(r.case_id, r.outcome, r.problems) for r in slice_results
           if r.problem_classes() & {"disagreement", "overrun", "import-mismatch"}]
    assert not bad


def test_fast_slice_mixes_spec_kinds(slice_results):
    assert len({r.spec_kind for r in slice_results}) >= 3


def test_upsample_models_use_opset_9_and_run():
    import onnx

    from fuzzing.unusual_nets import random_upsample_net

    net = random_upsample_net(np.random.default_rng(0))
    assert onnx.load_from_string(net.onnx_bytes).opset_import[0].version == 9
    assert ort_outputs(net.onnx_bytes, np.zeros((1, net.n_in)), net.input_shape).shape == (
        1, net.n_out)


def test_judge_lists_a_mismatch_refusal_of_a_model_that_imports_right():
    case = make_unusual_case(SEED, 0)
    res = new_result(case)
    res.import_status = "ok"
    judge(case, res, {"status": "refused", "time_s": 0.1, "message": "ModelMismatchError: "
                      "disagrees at 'Add': relative error 2.5e-08"}, timeout=2.0)
    assert res.problem_classes() == {"mismatch-refusal"}


def test_judge_lists_a_crash_that_the_pipeline_turned_into_unknown():
    case = make_unusual_case(SEED, 0)
    res = new_result(case)
    judge(case, res, {"status": "unknown", "time_s": 0.1, "message": "internal error in the "
                      "bound stages: ValueError: boom; no counterexample found"}, timeout=2.0)
    assert res.problem_classes() == {"internal-error"}


def test_local_search_never_loses_and_stays_on_float32_points_of_the_box():
    from fuzzing.unusual_oracle import local_search, violation_margin

    case = make_unusual_case(SEED, 2, kind="box")
    sampled = sample_case(case)
    starts = sampled.starts[0]
    part = case.parts[0]
    start_best = violation_margin(part, ort_outputs(
        case.net.onnx_bytes, starts, case.net.input_shape)).max()
    margin, x = local_search(case.net.onnx_bytes, case.net.input_shape, part, part.boxes[0],
                             starts, np.random.default_rng(0))
    lo, hi = part.boxes[0]
    assert margin >= start_best
    assert np.all(x >= lo) and np.all(x <= hi)
    assert np.array_equal(x, x.astype(np.float32).astype(np.float64))


def test_a_hanging_task_gets_its_worker_killed():
    from fuzzing.worker import TaskWorker

    worker = TaskWorker()
    try:
        answer, _ = worker.run("sleep", 0.5, seconds=60.0)
        assert answer is None and not worker.alive()
    finally:
        worker.close()


def test_import_errors_take_matching_nans_as_agreement():
    """A NaN on both sides agrees (a normalisation of a constant vector, case 61:131); on
    one side only it is the worst error; an infinity agrees only with itself."""
    from fuzzing.unusual_tasks import _errors

    nan, inf = float("nan"), float("inf")
    ours = np.array([[nan, 1.0], [nan, 1.0], [1.0, inf], [1.0, inf]])
    ref = np.array([[nan, 1.0], [0.5, 1.0], [1.0, inf], [1.0, 2.0]])
    assert _errors(ours, ref).tolist() == [0.0, inf, 0.0, inf]
