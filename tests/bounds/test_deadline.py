"""The engines' deadline: bound computations stop (raise) once it has passed, never return a
half-finished bound, and the verification pipeline turns that into a ``timeout`` answer."""

from __future__ import annotations

import time

import pytest
import torch

from bounds.engine.deadline import (
    DeadlineExceeded,
    check_deadline,
    engine_deadline,
    step_fits,
    timed_chunks,
)
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp
from tests.bounds.spies import StillClock

F64 = torch.float64


def _problem():
    graph = random_mlp([4, 16, 16, 3], seed=0)
    box = Interval(-torch.ones((2, 1, 4), dtype=F64), torch.ones((2, 1, 4), dtype=F64))
    return graph, box, torch.ones((1, 1, 3), dtype=F64), torch.zeros((1, 1), dtype=F64)


def test_no_deadline_by_default_and_nested_contexts_restore():
    """Nested blocks restore the outer deadline on exit and never extend it (a stage's share
    of the time ends with the run's at the latest); an earlier nested deadline applies."""
    check_deadline()  # nothing set: never raises
    with engine_deadline(time.monotonic() - 1):
        with pytest.raises(DeadlineExceeded):
            check_deadline()
        for later in (None, time.monotonic() + 60):
            with engine_deadline(later), pytest.raises(DeadlineExceeded):
                check_deadline()
        with pytest.raises(DeadlineExceeded):
            check_deadline()
    with engine_deadline(time.monotonic() + 60):
        with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
            check_deadline()
        check_deadline()
    check_deadline()


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
def test_bound_spec_stops_past_the_deadline(method):
    graph, box, coef, rhs = _problem()
    with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        bound_spec(graph, box, coef, rhs, BoundOptions(method=method))
    with engine_deadline(time.monotonic() + 60):  # a future deadline changes nothing
        inside = bound_spec(graph, box, coef, rhs, BoundOptions(method=method)).lower
    outside = bound_spec(graph, box, coef, rhs, BoundOptions(method=method)).lower
    assert torch.equal(inside, outside)


def test_interval_pass_stops_between_nodes(monkeypatch):
    """The interval pass that ``bound_spec`` runs ahead of an expanded Softmax checked no
    clock (a pass over MobileViT ran past a run's hard deadline): it stops at the first node
    past the deadline."""
    from bounds.engine import ibp

    graph, box, _, _ = _problem()
    seen = []
    real = ibp.propagate_node

    def counting(g, node, *args):
        seen.append(node.name)
        return real(g, node, *args)

    monkeypatch.setattr(ibp, "propagate_node", counting)
    assert len(ibp.ibp_bounds(graph, box)) == len(graph.nodes) + 1
    seen.clear()
    with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        ibp.ibp_bounds(graph, box)
    assert seen == []


def test_alpha_stops_between_iterations(monkeypatch):
    """The deadline passing during alpha-CROWN's iterations ends the call at the next
    iteration. The engines' clock stands still until the third gradient step, then jumps past
    the deadline: a loop that checks the clock between iterations raises before a fourth step
    (whatever the machine's speed or load); one that does not runs its 50."""
    import bounds.engine.deadline as deadline_mod

    graph, box, coef, rhs = _problem()
    clock = StillClock()
    monkeypatch.setattr(deadline_mod, "time", clock)
    steps = {"n": 0}
    real_backward = torch.Tensor.backward

    def step(self, *args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 3:
            clock.jump(3600.0)
        return real_backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", step)
    with engine_deadline(clock.now + 60.0), pytest.raises(DeadlineExceeded):
        bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha", alpha_iterations=50))
    assert steps["n"] == 3


def test_step_fits_leaves_room_for_the_gradient_and_the_next_pass():
    with engine_deadline(time.monotonic() + 10):
        assert step_fits(1.0) and not step_fits(5.0)
        assert not step_fits(1.0, deadline=time.monotonic() + 2)
    assert step_fits(1e6)  # no deadline at all


def test_alpha_returns_its_best_bound_when_no_gradient_step_fits(monkeypatch):
    """Autograd's backward cannot check the clock: optimize_alpha asks first, and with no
    time for a step returns the bound it has (sound, never looser than CROWN)."""
    import bounds.engine.optimize as optimize

    graph, box, coef, rhs = _problem()
    crown = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    monkeypatch.setattr(optimize, "step_fits", lambda *a, **k: False)
    backward_calls = {"n": 0}
    real_backward = torch.Tensor.backward

    def counting(self, *args, **kwargs):
        backward_calls["n"] += 1
        return real_backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", counting)
    with engine_deadline(time.monotonic() + 60):
        res = bound_spec(graph, box, coef, rhs, BoundOptions(method="alpha", alpha_iterations=20))
    assert backward_calls["n"] == 0
    assert torch.all(res.lower >= crown - 1e-12)


def test_pipeline_answers_timeout_when_the_engines_stop(monkeypatch):
    import verifier.strategy as strategy
    from verifier.config import VerifyConfig

    def stopped(*args, **kwargs):
        raise DeadlineExceeded("test")

    monkeypatch.setattr(strategy, "_run_methods", stopped)
    result = strategy.run_methods(None, None, VerifyConfig(), "cpu", time.monotonic() + 1)
    assert result.verdict == "timeout"
    assert "deadline" in result.message


def _wide_problem():
    """One domain with many unstable positions per layer: the refinement runs in chunks."""
    graph = random_mlp([6, 64, 64, 3], seed=1)
    box = Interval(-torch.ones((1, 1, 6), dtype=F64), torch.ones((1, 1, 6), dtype=F64))
    return graph, box, torch.ones((1, 1, 3), dtype=F64), torch.zeros((1, 1), dtype=F64)


def _samples_inside(graph, box, res, n=2000):
    from bounds.engine.forward import run_graph

    x = box.lower + (box.upper - box.lower) * torch.rand((n, *box.lower.shape[1:]), dtype=F64,
                                                         generator=torch.Generator().manual_seed(0))
    values = run_graph(graph, x, keep_all=True)
    assert set(res.intermediate) <= set(values) | {graph.inputs[0].name}
    for name, iv in res.intermediate.items():
        if name in values:
            v = values[name]
            assert bool((v >= iv.lower - 1e-9).all() and (v <= iv.upper + 1e-9).all()), name


def test_refinement_chunks_respect_the_memory_budget(monkeypatch):
    """A lone domain with many unstable positions: no pass element holds more coefficients
    than MAX_COEF_ELEMENTS (rows per element are capped, not all packed into one)."""
    import bounds.engine.intermediate as intermediate

    graph, box, coef, rhs = _wide_problem()
    budget = 2 * 8 * 64  # 8 rows of the widest value (64) and their negations
    monkeypatch.setattr(intermediate, "MAX_COEF_ELEMENTS", budget)
    sizes = []
    real = intermediate.backward_bound

    def watched(inter, start, c, *args, **kwargs):
        sizes.append(c.numel())
        return real(inter, start, c, *args, **kwargs)

    monkeypatch.setattr(intermediate, "backward_bound", watched)
    res = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown", intermediate="crown"))
    assert len(sizes) > 2 and max(sizes) <= budget
    _samples_inside(graph, box, res)


def test_refinement_stops_after_a_chunk_when_the_rest_would_not_fit(monkeypatch):
    """A slow first chunk makes the rest of the value's refinement look too long for the
    time left: it stops there (no deadline is reached, no exception), later values are not
    refined at all, and every bound stays sound (unrefined positions keep their intervals)."""
    import bounds.engine.intermediate as intermediate

    graph, box, coef, rhs = _wide_problem()
    monkeypatch.setattr(intermediate, "MAX_COEF_ELEMENTS", 2 * 8 * 64)
    calls = {"n": 0}
    real = intermediate.backward_bound

    def slow_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(intermediate, "backward_bound", slow_first)
    with engine_deadline(time.monotonic() + 3.0):
        res = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown",
                                                             intermediate="crown"))
    # The first hidden layer is affine in the input (exact intervals, nothing to refine); the
    # second has up to 64 unstable positions in several chunks (8 without a deadline): only
    # its slow first chunk ran.
    assert calls["n"] == 1
    _samples_inside(graph, box, res)
    full = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown", intermediate="crown"))
    assert bool((res.lower <= full.lower + 1e-9).all())


def test_measured_rate_is_shared_within_a_deadline_block():
    """A later bound computation in the same deadline block estimates from the rate an
    earlier one measured: with a rate that cannot fit, no refinement starts (IBP's
    intervals), and the final pass stops before its first row."""
    from bounds.engine.deadline import shared_rates
    from bounds.engine.intermediate import compute_intermediate
    from bounds.rules.rewrites import bound_graph

    graph, box, coef, rhs = _wide_problem()
    ibp = compute_intermediate(bound_graph(graph), box, method="ibp")
    with engine_deadline(time.monotonic() + 60):
        bound_spec(graph, box, coef, rhs, BoundOptions(method="crown", intermediate="crown"))
        rates = shared_rates()
        assert rates, "the first computation measured its refinement rate"
        for key in rates:
            rates[key] = 1e6  # seconds per unit: nothing fits
        inter = compute_intermediate(bound_graph(graph), box, method="crown")
        with pytest.raises(DeadlineExceeded):
            bound_spec(graph, box, coef, rhs, BoundOptions(method="crown",
                                                           intermediate="crown"))
    for name, iv in ibp.bounds.items():
        assert torch.equal(inter.bounds[name].lower, iv.lower), name
        assert torch.equal(inter.bounds[name].upper, iv.upper), name


def _cnn_problem():
    from tests.bounds.structured_nets import maxpool_cnn

    graph = maxpool_cnn(0, deep=True)
    shape = graph.inputs[0].shape
    box = Interval(-torch.ones((2, *shape), dtype=F64), torch.ones((2, *shape), dtype=F64))
    return graph, box, torch.eye(3, dtype=F64).unsqueeze(0), torch.zeros((1, 3), dtype=F64)


def _float64_adjoints(monkeypatch) -> None:
    """Adjoints in float64 only: float32 ones round differently per chunk size
    (tests/bounds/test_adjoint_precision.py checks those against their allowance)."""
    import bounds.engine.adjoint_precision as adjoint_precision

    monkeypatch.setattr(adjoint_precision, "ENABLED", False)


def _one_row_chunks(monkeypatch):
    """Every affine VJP in chunks of one row (time granule ~0): the most chunks possible.
    The whole pass to compare with must run with ``_float64_adjoints`` too."""
    import bounds.engine.crown as crown

    _float64_adjoints(monkeypatch)

    monkeypatch.setattr(crown, "NODE_TIME_GRANULE_S", 1e-15)
    monkeypatch.setattr(crown, "VJP_PROBE_ELEMENTS", 1)
    calls = {"n": 0}
    real = crown._vjp_chunk

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(crown, "_vjp_chunk", counted)
    return calls


def test_chunked_vjp_gives_the_same_bounds(monkeypatch):
    graph, box, coef, rhs = _cnn_problem()
    options = BoundOptions(method="crown", intermediate="crown")
    _float64_adjoints(monkeypatch)
    whole = bound_spec(graph, box, coef, rhs, options).lower
    calls = _one_row_chunks(monkeypatch)
    with engine_deadline(time.monotonic() + 600):
        chunked = bound_spec(graph, box, coef, rhs, options).lower
    assert calls["n"] > 50
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-10)


def test_chunked_vjp_stops_at_the_deadline_inside_a_node(monkeypatch):
    """The deadline passing while one Conv step runs its chunks ends the computation at the
    next chunk, not after the node (the check that raises is the one between chunks)."""
    import bounds.engine.crown as crown
    import bounds.engine.deadline as deadline_module

    graph, box, coef, rhs = _cnn_problem()
    calls = _one_row_chunks(monkeypatch)
    counted = crown._vjp_chunk

    def slow(*args, **kwargs):
        if calls["n"] == 0:  # the deadline: 0.2 s after the first chunk starts (the work
            # before it, IBP and setup, takes seconds on a loaded machine)
            deadline_module._DEADLINE.set(time.monotonic() + 0.2)
        time.sleep(0.02)
        return counted(*args, **kwargs)

    monkeypatch.setattr(crown, "_vjp_chunk", slow)
    with engine_deadline(time.monotonic() + 600), pytest.raises(DeadlineExceeded) as info:
        bound_spec(graph, box, coef, rhs, BoundOptions(method="crown", intermediate="crown"))
    assert info.traceback[-2].name == "_vjp_rows"
    assert calls["n"] < 50


def test_a_first_bound_step_that_does_not_fit_leaves_time_for_a_last_attack(monkeypatch):
    """The cascade's CROWN step runs under its share of the time: one that cannot end by
    then leaves the rest to a last attack, answering unknown with the reason (not timeout)."""
    import numpy as np

    import verifier.strategy as strategy
    from tests.milp.nets import make_spec, onnx_mlp, random_layers
    from verifier.config import VerifyConfig

    layers = random_layers([20, 8, 2], np.random.default_rng(0))
    model = onnx_mlp([(w.astype(np.float32).astype(np.float64), b) for w, b in layers])
    spec = make_spec([(np.full(20, -0.1), np.full(20, 0.1))], [[[1.0, -1.0]]], [[-1e3]])
    attacks = []

    def no_attack(*args, **kwargs):
        attacks.append(args[-1])  # budget
        return None

    def endless_bound(*args, **kwargs):
        while True:  # a pass far too long for the time: only the engines' deadline ends it
            check_deadline()
            time.sleep(0.01)

    monkeypatch.setattr(strategy, "_attack", no_attack)
    monkeypatch.setattr(strategy, "bound_spec", endless_bound)
    monkeypatch.setattr(strategy, "CASCADE_STEP_SHARE", 0.3)  # > 1 s left for the attack
    result = strategy.run_methods(model, spec, VerifyConfig(timeout=3), "cpu",
                                  time.monotonic() + 3)
    assert result.verdict == "unknown" and "did not fit" in result.message
    assert len(attacks) == 2  # the first short attack, then the last one


def _generator_graph(tmp_path):
    """Gemm -> Reshape -> ConvTranspose (stride 2) -> Relu -> Resize (nearest x2) -> Conv:
    the generator-style layers whose backward steps are long on real models."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from verifier.onnx_import.loader import load_model

    rng = np.random.default_rng(0)

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array, np.float32), name)

    inits = [init("w", rng.normal(size=(18, 4))), init("b", rng.normal(size=18) * 0.1),
             numpy_helper.from_array(np.array([1, 2, 3, 3], np.int64), "shape"),
             init("wt", rng.normal(size=(2, 3, 4, 4)) / 4), init("scales", [1, 1, 2, 2]),
             init("wc", rng.normal(size=(2, 3, 3, 3)) / 5)]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1),
             helper.make_node("Reshape", ["z", "shape"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt"], ["t"], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["t"], ["h"]),
             helper.make_node("Resize", ["h", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["u", "wc"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "gen", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 12, 12])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    path = tmp_path / "gen.onnx"
    onnx.save(proto, path)
    return load_model(path).graph


def test_chunked_vjp_through_convtranspose_and_resize(tmp_path, monkeypatch):
    """One-row VJP chunks through ConvTranspose, Resize and Conv give the bounds of one
    pass, and those bounds enclose sampled outputs."""
    from bounds.engine.forward import run_graph

    graph = _generator_graph(tmp_path)
    n_out = 2 * 12 * 12
    box = Interval(-torch.ones((1, 1, 4), dtype=F64), torch.ones((1, 1, 4), dtype=F64))
    coef = torch.cat([torch.eye(n_out, dtype=F64), -torch.eye(n_out, dtype=F64)]).unsqueeze(0)
    rhs = torch.zeros((1, 2 * n_out), dtype=F64)
    options = BoundOptions(method="crown", intermediate="crown")
    _float64_adjoints(monkeypatch)
    whole = bound_spec(graph, box, coef, rhs, options).lower
    calls = _one_row_chunks(monkeypatch)
    with engine_deadline(time.monotonic() + 600):
        chunked = bound_spec(graph, box, coef, rhs, options).lower
    assert calls["n"] > 2 * n_out
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-9)
    x = -1 + 2 * torch.rand((500, 1, 4), dtype=F64, generator=torch.Generator().manual_seed(1))
    (y,) = run_graph(graph, x)
    y = y.reshape(500, -1)
    assert bool((y >= whole[0, :n_out] - 1e-6).all() and (-y >= whole[0, n_out:] - 1e-6).all())


def _one_item_chunks(monkeypatch) -> None:
    """Rate-sized chunks of one item each (a first chunk of one, no time target)."""
    import bounds.engine.deadline as deadline

    monkeypatch.setattr(deadline, "FIRST_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(deadline, "CHUNK_TARGET_S", 0.0)


def test_timed_chunks_cover_every_item_once_in_order_with_rate_sized_chunks():
    seen = []

    def run(start, stop):
        seen.append((start, stop))
        time.sleep(0.001 * (stop - start))
        return list(range(start, stop))

    out = timed_chunks(2000, 8, run, target_s=0.05)
    assert [i for part in out for i in part] == list(range(2000))
    assert seen[0] == (0, 4096 // 8)  # nothing measured yet: FIRST_CHUNK_ELEMENTS
    assert len(seen) > 2  # then ~50 items per 0.05 s chunk


def test_timed_chunks_size_later_chunks_from_the_first():
    seen = []

    def run(start, stop):
        seen.append(stop - start)
        time.sleep(0.002 * (stop - start))

    timed_chunks(100, 4096, run, target_s=0.02)  # first chunk: one item (4096 elements)
    assert seen[0] == 1
    assert all(n <= 12 for n in seen) and len(seen) >= 9  # ~10 items per 0.02 s chunk


def test_timed_chunks_with_a_key_size_a_later_call_from_the_rate_measured_before():
    """The deadline block remembers a keyed call's rate: the next call with that key (the
    next alpha iteration's relaxation) runs its items in one chunk, where an unkeyed call
    probes with one item first (and pays a concatenation of the chunks)."""
    seen = []

    def run(start, stop):
        seen.append(stop - start)
        time.sleep(0.0005 * (stop - start))

    with engine_deadline(time.monotonic() + 60):
        timed_chunks(5, 8192, run, key=("relax", "Relu"))
        assert seen[0] == 1  # nothing measured yet
        seen.clear()
        timed_chunks(5, 8192, run, key=("relax", "Relu"))
        assert seen == [5]
        seen.clear()
        timed_chunks(5, 8192, run)  # no key: probes again
        assert seen[0] == 1
        seen.clear()
        timed_chunks(5, 8192, run, key=("relax", "Gelu"))  # another kind of work: probes
        assert seen[0] == 1
    seen.clear()
    with engine_deadline(time.monotonic() + 60, fresh_rates=True):  # a fresh block: probes
        timed_chunks(5, 8192, run, key=("relax", "Relu"))
    assert seen[0] == 1


def test_timed_chunks_stop_at_the_deadline():
    calls = []
    with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        timed_chunks(10, 1, lambda a, b: calls.append((a, b)))
    assert calls == []


@pytest.mark.parametrize("activation", ["Sigmoid", "Sin", "Relu"])
def test_alpha_relaxation_in_row_chunks_gives_the_same_bounds(monkeypatch, activation):
    """Relaxations with per-row alphas run in chunks of spec rows (a clock check between
    them): one row per chunk gives the same alpha-CROWN bounds as one call."""

    graph = random_mlp([4, 16, 16, 3], seed=2, activation=activation)
    box = Interval(-torch.ones((2, 1, 4), dtype=F64), torch.ones((2, 1, 4), dtype=F64))
    coef = torch.eye(3, dtype=F64).unsqueeze(0)
    rhs = torch.zeros((1, 3), dtype=F64)
    options = BoundOptions(method="alpha", alpha_iterations=5)
    whole = bound_spec(graph, box, coef, rhs, options).lower
    _one_item_chunks(monkeypatch)
    chunked = bound_spec(graph, box, coef, rhs, options).lower
    assert torch.allclose(whole, chunked, rtol=0, atol=1e-12)


def test_alpha_relaxation_chunks_stop_at_the_deadline(monkeypatch):
    import bounds.engine.crown as crown

    graph = random_mlp([4, 16, 3], seed=2, activation="Sigmoid")
    node = next(n for n in graph.nodes if n.op == "Sigmoid")
    lo = -torch.ones((1, 1, *graph.shape_of(node.dynamic_inputs[0])), dtype=F64)
    alpha = torch.full((1, 3, *node.shape), 0.5, dtype=F64)
    _one_item_chunks(monkeypatch)
    with engine_deadline(time.monotonic() - 1), pytest.raises(DeadlineExceeded):
        crown._alpha_relaxation(node, crown.rules().get("Sigmoid"), lo, -lo, alpha)


def test_fresh_rates_keep_the_enclosing_deadline():
    """A nested block with fresh_rates starts an empty measurement memo, and still stops at
    the enclosing deadline when that is earlier."""
    from bounds.engine.deadline import shared_rates

    with engine_deadline(time.monotonic() - 1):
        shared_rates()["k"] = 1.0
        with engine_deadline(time.monotonic() + 60, fresh_rates=True):
            assert shared_rates() == {}
            with pytest.raises(DeadlineExceeded):
                check_deadline()
        assert shared_rates() == {"k": 1.0}


def test_per_node_set_up_loops_read_the_clock():
    """Copies, casts and alpha starts of every value of a net are loops over its nodes, each
    node seconds on a VGG16-size net (a search step's set-up ran 9 s without a clock read,
    past the run's deadline): past the deadline they stop at their next node."""
    from bounds.engine.alpha_ops import init_alphas
    from bounds.engine.deadline import checked
    from bounds.engine.intermediate import compute_intermediate
    from bounds.engine.work_dtype import cast_intermediates

    graph, box, _, _ = _problem()
    inter = compute_intermediate(graph, Interval(box.lower[:, 0], box.upper[:, 0]))
    with engine_deadline(time.monotonic() - 1.0):
        for run in (lambda: inter.select(torch.tensor([0])),
                    lambda: cast_intermediates(inter, torch.float32),
                    lambda: init_alphas(inter, 1),
                    lambda: list(checked([1, 2]))):
            with pytest.raises(DeadlineExceeded):
                run()
    assert list(checked([1, 2])) == [1, 2]  # no deadline: every item
